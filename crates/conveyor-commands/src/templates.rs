//! The process templates shipped in `processes/`, embedded in the binary so that
//! `conveyor process clone bitrix_oauth` works from any folder.

/// (name, YAML) of each shipped template.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "bitrix_oauth",
        include_str!("../../../processes/bitrix_oauth.yaml"),
    ),
    (
        "bitrix_deals",
        include_str!("../../../processes/bitrix_deals.yaml"),
    ),
    (
        "notify_telegram",
        include_str!("../../../processes/notify_telegram.yaml"),
    ),
    (
        "notify_twilio",
        include_str!("../../../processes/notify_twilio.yaml"),
    ),
    (
        "notify_messagebird",
        include_str!("../../../processes/notify_messagebird.yaml"),
    ),
    (
        "notify_mandrill",
        include_str!("../../../processes/notify_mandrill.yaml"),
    ),
    (
        "notify_unisender",
        include_str!("../../../processes/notify_unisender.yaml"),
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
