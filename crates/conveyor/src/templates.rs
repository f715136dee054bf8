//! The process templates shipped in `processes/`, embedded in the binary so that
//! `conveyor process clone bitrix_oauth` works from any folder.

/// (name, YAML) of each shipped template.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "bitrix_oauth",
        include_str!("../../../processes/bitrix_oauth.yaml"),
    ),
    (
        "deals_report",
        include_str!("../../../processes/deals_report.yaml"),
    ),
];

pub fn find(name: &str) -> Option<&'static str> {
    TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(n, _)| *n).collect()
}
