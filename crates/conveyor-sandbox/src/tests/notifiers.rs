//! The notification services: success, authentication errors, validation and forced
//! failures, and the record of accepted messages.

use serde_json::json;

use super::{Harness, read, start};
use crate::{Failure, Service};

impl Harness {
    fn telegram_path(&self, token: &str) -> String {
        format!("/bot{token}/sendMessage")
    }

    fn twilio_path(&self) -> String {
        format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            self.sandbox.credentials().twilio_account_sid
        )
    }
}

#[tokio::test]
async fn telegram() {
    let h = start().await;
    let token = h.sandbox.credentials().telegram_bot_token.clone();
    let path = h.telegram_path(&token);

    // JSON POST.
    let (status, body) = h
        .post_json(
            &path,
            &json!({"chat_id": 123456, "text": "token refresh failed", "parse_mode": "HTML"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["message_id"], 1);
    assert_eq!(body["result"]["chat"]["id"], 123456);
    assert_eq!(body["result"]["text"], "token refresh failed");
    assert!(body["result"]["date"].is_i64());

    // Form POST to a channel, and GET with query parameters.
    let response = h
        .http
        .post(h.url(&path))
        .form(&[("chat_id", "@sandbox_alerts"), ("text", "hello")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["chat"]["type"], "channel");
    assert_eq!(body["result"]["chat"]["username"], "sandbox_alerts");
    let (status, body) = h.get(&format!("{path}?chat_id=-42&text=from%20GET")).await;
    assert_eq!((status, &body["result"]["text"]), (200, &json!("from GET")));

    // Errors: HTTP status = error_code.
    let cases = [
        (
            h.telegram_path("1:wrong"),
            json!({"chat_id": 1, "text": "x"}),
            401,
            "Unauthorized",
        ),
        (
            path.clone(),
            json!({"text": "x"}),
            400,
            "Bad Request: chat_id is empty",
        ),
        (
            path.clone(),
            json!({"chat_id": 1, "text": ""}),
            400,
            "Bad Request: message text is empty",
        ),
        (
            path.clone(),
            json!({"chat_id": 1, "text": "x".repeat(4097)}),
            400,
            "Bad Request: message is too long",
        ),
        (
            path.clone(),
            json!({"chat_id": "nobody", "text": "x"}),
            400,
            "Bad Request: chat not found",
        ),
        (
            format!("/bot{token}/sendPhoto"),
            json!({"chat_id": 1}),
            404,
            "Not Found",
        ),
    ];
    for (path, request, code, description) in cases {
        let (status, body) = h.post_json(&path, &request).await;
        assert_eq!(
            (status, body),
            (
                code,
                json!({"ok": false, "error_code": code, "description": description})
            ),
            "{request}"
        );
    }

    // Forced: flood control with retry_after, then a blocked bot.
    h.sandbox
        .fail_next(
            Service::Telegram,
            1,
            Failure::Error {
                error: "too_many_requests".into(),
                retry_after: Some(3),
            },
        )
        .unwrap();
    h.sandbox
        .fail_next(Service::Telegram, 1, Failure::error("blocked"))
        .unwrap();
    let request = json!({"chat_id": 1, "text": "x"});
    let (status, body) = h.post_json(&path, &request).await;
    assert_eq!(
        (status, body),
        (
            429,
            json!({"ok": false, "error_code": 429,
                   "description": "Too Many Requests: retry after 3",
                   "parameters": {"retry_after": 3}})
        )
    );
    let (status, body) = h.post_json(&path, &request).await;
    assert_eq!(
        (status, &body["description"]),
        (403, &json!("Forbidden: bot was blocked by the user"))
    );

    let messages = h.sandbox.messages(Service::Telegram);
    let texts: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.to[0].as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            ("123456", "token refresh failed"),
            ("@sandbox_alerts", "hello"),
            ("-42", "from GET")
        ]
    );
    let requests = h.sandbox.stats().notifier_requests;
    assert_eq!(requests.len(), 11);
    assert_eq!(requests.iter().filter(|r| r.forced).count(), 2);
}

#[tokio::test]
async fn twilio() {
    let h = start().await;
    let credentials = h.sandbox.credentials().clone();
    let path = h.twilio_path();
    let send = |user: &str, password: &str, form: &[(&str, &str)]| {
        h.http
            .post(h.url(&path))
            .basic_auth(user, Some(password))
            .form(form)
            .send()
    };
    let sid = credentials.twilio_account_sid.as_str();
    let token = credentials.twilio_auth_token.as_str();

    let (status, body) = read(
        send(
            sid,
            token,
            &[
                ("To", "+15558675310"),
                ("From", "+15017122661"),
                ("Body", "access_token doesn't update"),
            ],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["sid"].as_str().unwrap().starts_with("SM"));
    assert_eq!(body["sid"].as_str().unwrap().len(), 34);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+15558675310");
    assert_eq!(body["from"], "+15017122661");
    assert_eq!(body["body"], "access_token doesn't update");
    assert!(body["error_code"].is_null());
    assert_eq!(body["account_sid"], sid);

    // Bad credentials: 401, code 20003. No credentials at all: the same.
    let (status, body) = read(
        send(
            sid,
            "wrong",
            &[
                ("To", "+15558675310"),
                ("From", "+15017122661"),
                ("Body", "x"),
            ],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"code": 20003, "message": "Authenticate",
                   "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})
        )
    );
    let response = h.http.post(h.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // Validation.
    let (status, body) = read(
        send(
            sid,
            token,
            &[("To", "12"), ("From", "+15017122661"), ("Body", "x")],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 21211,
                   "message": "The 'To' number 12 is not a valid phone number.",
                   "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
        )
    );
    for (form, code) in [
        (vec![("From", "+15017122661"), ("Body", "x")], 21604),
        (vec![("To", "+15558675310"), ("Body", "x")], 21603),
        (
            vec![("To", "+15558675310"), ("From", "+15017122661")],
            21602,
        ),
    ] {
        let (status, body) = read(send(sid, token, &form).await.unwrap()).await;
        assert_eq!((status, &body["code"]), (400, &json!(code)), "{form:?}");
    }
    // A messaging service instead of From: accepted.
    let (status, body) = read(
        send(
            sid,
            token,
            &[
                ("To", "whatsapp:+15558675310"),
                ("MessagingServiceSid", "MG00000000000000000000000000000000"),
                ("Body", "hi"),
            ],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &body["status"]), (201, &json!("accepted")));

    // Another account's URL with our credentials: not found.
    let response = h
        .http
        .post(h.url("/2010-04-01/Accounts/ACother/Messages.json"))
        .basic_auth(sid, Some(token))
        .form(&[
            ("To", "+15558675310"),
            ("From", "+15017122661"),
            ("Body", "x"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, &body["code"]), (404, &json!(20404)));

    // Forced: invalid 'To' (names the number sent) and a bare 503.
    h.sandbox
        .fail_next(Service::Twilio, 1, Failure::error("invalid_to"))
        .unwrap();
    h.sandbox
        .fail_next(Service::Twilio, 1, Failure::Status { status: 503 })
        .unwrap();
    let form = [
        ("To", "+15558675310"),
        ("From", "+15017122661"),
        ("Body", "x"),
    ];
    let (status, body) = read(send(sid, token, &form).await.unwrap()).await;
    assert_eq!(
        (status, &body["message"]),
        (
            400,
            &json!("The 'To' number +15558675310 is not a valid phone number.")
        )
    );
    let (status, _) = read(send(sid, token, &form).await.unwrap()).await;
    assert_eq!(status, 503);

    let messages = h.sandbox.messages(Service::Twilio);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].to, ["+15558675310"]);
    assert_eq!(messages[0].from.as_deref(), Some("+15017122661"));
    assert_eq!(messages[0].text, "access_token doesn't update");
}

#[tokio::test]
async fn messagebird() {
    let h = start().await;
    let key = h.sandbox.credentials().messagebird_access_key.clone();

    // Form fields, comma-separated recipients.
    let response = h
        .http
        .post(h.url("/messages"))
        .header("Authorization", format!("AccessKey {key}"))
        .form(&[
            ("originator", "Conveyor"),
            ("body", "refresh failed"),
            ("recipients", "31612345678,+31687654321"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"].as_str().unwrap().len(), 32);
    assert_eq!(
        body["href"],
        format!(
            "{}/messages/{}",
            h.sandbox.url(),
            body["id"].as_str().unwrap()
        )
    );
    assert_eq!(body["direction"], "mt");
    let items = body["recipients"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["recipient"], 31612345678_u64);
    assert_eq!(items[0]["status"], "sent");
    assert_eq!(items[1]["recipient"], 31687654321_u64);

    // JSON with an array of recipients.
    let response = h
        .http
        .post(h.url("/messages"))
        .header("Authorization", format!("AccessKey {key}"))
        .json(&json!({"originator": "+31600000000", "body": "x", "recipients": [31612345678_u64]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);

    // A wrong key.
    let response = h
        .http
        .post(h.url("/messages"))
        .header("Authorization", "AccessKey wrong")
        .form(&[
            ("originator", "Conveyor"),
            ("body", "x"),
            ("recipients", "31612345678"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        read(response).await,
        (
            401,
            json!({"errors": [{"code": 2,
                               "description": "Request not allowed (incorrect access_key)",
                               "parameter": "access_key"}]})
        )
    );

    // Validation: every problem at once, 422.
    let response = h
        .http
        .post(h.url("/messages"))
        .header("Authorization", format!("AccessKey {key}"))
        .form(&[("body", "x"), ("recipients", "abc")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 422, "{body}");
    let codes: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_u64().unwrap(),
                e["parameter"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(codes, [(9, "originator"), (9, "recipients")]);

    // Forced: not enough balance.
    h.sandbox
        .fail_next(Service::Messagebird, 1, Failure::error("no_balance"))
        .unwrap();
    let response = h
        .http
        .post(h.url("/messages"))
        .header("Authorization", format!("AccessKey {key}"))
        .form(&[
            ("originator", "Conveyor"),
            ("body", "x"),
            ("recipients", "31612345678"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, &body["errors"][0]["code"]), (422, &json!(25)));

    let messages = h.sandbox.messages(Service::Messagebird);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].to, ["31612345678", "31687654321"]);
    assert_eq!(messages[0].from.as_deref(), Some("Conveyor"));
}

#[tokio::test]
async fn mandrill() {
    let h = start().await;
    let key = h.sandbox.credentials().mandrill_key.clone();
    let request = |key: &str| {
        json!({
            "key": key,
            "message": {
                "subject": "Escalation",
                "text": "access_token doesn't update",
                "from_email": "robot@example.com",
                "to": [{"email": "author@example.com", "type": "to"},
                       {"email": "not an address", "type": "cc"}]
            }
        })
    };

    let (status, body) = h
        .post_json("/api/1.0/messages/send.json", &request(&key))
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body.as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["email"], "author@example.com");
    assert_eq!(results[0]["status"], "sent");
    assert!(results[0]["reject_reason"].is_null());
    assert_eq!(results[0]["_id"].as_str().unwrap().len(), 32);
    assert_eq!(results[1]["status"], "invalid");

    let (status, body) = h
        .post_json("/api/1.0/messages/send.json", &request("wrong"))
        .await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"status": "error", "code": -1, "name": "Invalid_Key",
                   "message": "Invalid API key"})
        )
    );
    let (status, body) = h
        .post_json("/api/1.0/messages/send", &json!({"key": key}))
        .await;
    assert_eq!((status, &body["name"]), (500, &json!("ValidationError")));

    // Forced rejection: HTTP 200, but every recipient rejected.
    h.sandbox
        .fail_next(Service::Mandrill, 1, Failure::error("rejected"))
        .unwrap();
    let (status, body) = h
        .post_json("/api/1.0/messages/send.json", &request(&key))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["status"], "rejected");
    assert_eq!(body[0]["reject_reason"], "hard-bounce");

    let messages = h.sandbox.messages(Service::Mandrill);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["author@example.com"]);
    assert_eq!(messages[0].subject.as_deref(), Some("Escalation"));
    assert!(messages[0].params.get("key").is_none(), "key not recorded");
}

#[tokio::test]
async fn unisender() {
    let h = start().await;
    let key = h.sandbox.credentials().unisender_api_key.clone();
    let fields = |list_id: &'static str| {
        vec![
            ("email", "author@example.com"),
            ("sender_name", "Conveyor"),
            ("sender_email", "robot@example.com"),
            ("subject", "Escalation"),
            ("body", "<p>access_token doesn't update</p>"),
            ("list_id", list_id),
        ]
    };
    let send = |key: String, form: Vec<(&'static str, &'static str)>| {
        h.http
            .post(h.url("/en/api/sendEmail"))
            .query(&[("format", "json"), ("api_key", key.as_str())])
            .form(&form)
            .send()
    };

    let (status, body) = read(send(key.clone(), fields("1")).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["email_id"].as_str().is_some(), "{body}");

    // Errors are HTTP 200 with an error body.
    let (status, body) = read(send("wrong".into(), fields("1")).await.unwrap()).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"error": "Invalid API key", "code": "invalid_api_key"})
        )
    );
    let mut missing = fields("1");
    missing.retain(|(k, _)| *k != "list_id");
    let (status, body) = read(send(key.clone(), missing).await.unwrap()).await;
    assert_eq!((status, &body["code"]), (200, &json!("invalid_arg")));

    // Forced: no money.
    h.sandbox
        .fail_next(Service::Unisender, 1, Failure::error("not_enough_money"))
        .unwrap();
    let (status, body) = read(send(key.clone(), fields("1")).await.unwrap()).await;
    assert_eq!((status, &body["code"]), (200, &json!("not_enough_money")));

    // GET with everything in the query works too (another language segment).
    let mut query = fields("2");
    query.push(("api_key", key.as_str()));
    let response = h
        .http
        .get(h.url("/ru/api/sendEmail"))
        .query(&query)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200);
    assert!(body["result"]["email_id"].is_string());

    let messages = h.sandbox.messages(Service::Unisender);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].to, ["author@example.com"]);
    assert_eq!(messages[0].text, "<p>access_token doesn't update</p>");
    assert!(messages[0].params.get("api_key").is_none());
}
