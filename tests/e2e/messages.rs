//! Message bodies written in handlebars: the notifiers' texts and HTML emails, and
//! `set_param`'s `render` for process authors (docs/templates.md#message-bodies-handlebars).

use std::time::Duration;

use conveyor_sandbox::Service;
use conveyor_store::TaskStatus;
use serde_json::json;

use crate::bitrix::{clone_notifiers, sandbox};
use crate::engine::Engine;

const HOSTILE: &str = "<script>alert('x')</script> & \"co\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_bodies_escape_a_hostile_script_and_sms_and_telegram_text_do_not() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    let notifiers = clone_notifiers(&e, &sandbox);
    for (alias, _) in &notifiers {
        e.add(&format!("@{alias}"), Some("m"), json!({ "text": HOSTILE }));
    }
    e.idle().await;
    for (alias, service) in &notifiers {
        let task = e.task(&format!("@{alias}"), "m");
        assert_eq!(task.status, TaskStatus::Done, "{alias}: {:?}", task.data);
        let messages = sandbox.messages(*service);
        assert_eq!(messages.len(), 1, "{alias}");
        let message = &messages[0];
        match service {
            Service::Mandrill => {
                let html = message.params["message"]["html"].as_str().expect("html");
                assert!(!html.contains("<script>"), "{html}");
                assert!(
                    html.contains(
                        "<p>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;co&quot;</p>"
                    ),
                    "{html}"
                );
                // The plain-text part is the text as it was.
                assert_eq!(message.params["message"]["text"], HOSTILE);
            }
            Service::Unisender => {
                let body = message.params["body"].as_str().expect("body");
                assert!(!body.contains("<script>"), "{body}");
                assert!(body.contains("&lt;script&gt;"), "{body}");
                assert!(body.starts_with("<html><body>"), "{body}");
            }
            _ => assert_eq!(
                message.text, HOSTILE,
                "{alias}: SMS and Telegram text is not escaped"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_of_folded_alerts_lists_each_of_them_in_text_and_html() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    clone_notifiers(&e, &sandbox);
    // 5 alerts start in 10 minutes; the next 3 are folded into one summary (only tasks
    // without a ref are folded, as alerts are).
    for (alias, service) in [("tg", Service::Telegram), ("mandrill", Service::Mandrill)] {
        for i in 0..8 {
            e.add(
                &format!("@{alias}"),
                None,
                json!({
                    "text": format!("alert {i}"),
                    "portal": format!("portal{i}"),
                    "error": if i == 6 { String::new() } else { "invalid_grant".into() },
                    "time": format!("10:0{i}"),
                }),
            );
        }
        e.idle().await;
        assert_eq!(sandbox.messages(service).len(), 5, "{alias}");
    }
    e.advance(Duration::from_secs(10 * 60 + 1)).await;
    let telegram = sandbox.messages(Service::Telegram);
    assert_eq!(telegram.len(), 6, "the summary was sent");
    assert_eq!(
        telegram[5].text,
        "3 more alert(s) came within 10 minutes and were held back by the rate limit of this process:\n\
         • portal portal5: invalid_grant at 10:05\n\
         • portal portal6: alert 6 at 10:06\n\
         • portal portal7: invalid_grant at 10:07\n"
    );
    let mandrill = sandbox.messages(Service::Mandrill);
    assert_eq!(mandrill.len(), 6);
    let html = mandrill[5].params["message"]["html"]
        .as_str()
        .expect("html");
    assert!(
        html.contains("<li>portal <b>portal5</b>: invalid_grant at 10:05</li>\n<li>portal <b>portal6</b>: alert 6 at 10:06</li>"),
        "{html}"
    );
    assert_eq!(html.matches("<li>").count(), 3, "{html}");
}

const AUTHOR: &str = r#"
process: author
params:
  name: {}
  items: {}
nodes:
  start: { type: start, next: compose }
  compose:
    type: set_param
    set: { plain: "{{name}}" }
    render:
      html:
        handlebars: "<h1>{{name}}</h1>{{#each items}}<i>{{this.n}}</i>{{/each}} {{token}} {{json items}}"
        with: { token: "{{conv[@holder].ref[main].token}}" }
      sms:
        escape: none
        handlebars: "{{name}}: {{#if items}}{{len items}} items{{else}}none{{/if}}"
      count:
        escape: none
        handlebars: "{{len items}}"
    cast: { count: number }
    next: done
    on_error: failed
  done: { type: final }
  failed: { type: final, status: error }
"#;

#[tokio::test]
async fn process_authors_render_handlebars_with_corezoid_references_resolved_first() {
    let e = Engine::new();
    e.clone_process(
        "process: holder\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: escalation, next: done }\n  done: { type: final }\n",
        Some("holder"),
    );
    e.add("@holder", Some("main"), json!({ "token": "<T&1>" }));
    e.clone_process(AUTHOR, Some("author"));
    e.add(
        "@author",
        Some("t"),
        json!({ "name": "<b>Ann</b>", "items": [{ "n": 1 }, { "n": "<2>" }] }),
    );
    e.idle().await;
    let task = e.task("@author", "t");
    assert_eq!(task.node, "done", "{:?}", task.data);
    assert_eq!(
        task.data["html"],
        "<h1>&lt;b&gt;Ann&lt;/b&gt;</h1><i>1</i><i>&lt;2&gt;</i> &lt;T&amp;1&gt; [{&quot;n&quot;:1},{&quot;n&quot;:&quot;&lt;2&gt;&quot;}]"
    );
    assert_eq!(task.data["sms"], "<b>Ann</b>: 2 items");
    assert_eq!(task.data["count"], 2);
    assert_eq!(task.data["plain"], "<b>Ann</b>");

    // A conditional: an empty list takes the `else`.
    e.add("@author", Some("u"), json!({ "name": "x", "items": [] }));
    e.idle().await;
    assert_eq!(e.task("@author", "u").data["sms"], "x: none");
}
