//! `api_call`: an HTTP request, its response mapping, retries and limits.

use super::*;
use conveyor_model::BodyFormat;

impl Step<'_> {
    pub(super) async fn api_call(&mut self, api: &ApiCall) -> Result<()> {
        // A previous call's result is decided: commit it before the next side effect.
        if self.called_out {
            self.commit().await?;
        }
        let request = match self.build_request(api) {
            Ok(r) => r,
            Err(message) => {
                let failure = Failure::bind(message);
                self.fail(
                    "api",
                    failure.type_error,
                    failure.tag,
                    failure.description,
                    None,
                );
                return Ok(());
            }
        };
        let secrets = self.known_secrets();
        let shown_url = mask::mask_text(request.url.as_str(), &secrets);
        let method = request.method.as_str();
        let permit = match api.concurrency {
            Some(limit) => {
                let semaphore = self.rt.limit(self.task.process, &self.task.node, limit);
                semaphore.acquire_owned().await.ok()
            }
            None => None,
        };
        // On a store shared by several engines the limit holds for all of them together.
        let place = match api.concurrency {
            Some(limit) if self.rt.store.shared() => Some(
                shared_place(
                    self.rt.store.as_ref(),
                    self.task.process,
                    &self.task.node,
                    limit,
                    request.timeout + PLACE_MARGIN,
                )
                .await?,
            ),
            _ => None,
        };
        let (result, measured) = http::send(&self.rt.http, request, &api.success_codes).await;
        let millis = measured.millis;
        if let Some(place) = place {
            self.rt
                .store
                .give_back_call_slot(self.task.process, &self.task.node, place);
        }
        if api.debug {
            // Corezoid's `debug_info`: what the exchange took, on either route.
            let status = match &result {
                Ok(reply) => Some(reply.status),
                Err(f) => f.http_code,
            };
            self.task.data.insert(
                "__conveyor_api_debug__".into(),
                serde_json::json!({
                    "http_exec_time": measured.millis,
                    "http_req_body_size": measured.sent,
                    "http_res_code": status,
                    "http_res_body_size": measured.received,
                }),
            );
        }
        drop(permit);
        self.rt.metrics.api_call(match &result {
            Ok(reply) => Some(reply.status),
            Err(f) => f.http_code,
        });
        // Time has passed during the call.
        self.now = self.now.max(self.rt.now());
        self.called_out = true;
        self.task.attempt += 1;
        let attempt = self.task.attempt;
        let (status, outcome) = match &result {
            Ok(reply) => (Some(reply.status), "ok".into()),
            Err(f) => (
                f.http_code,
                format!("{}: {}", f.tag, mask::mask_text(&f.description, &secrets)).into(),
            ),
        };
        self.event(EventKind::ApiRequest {
            method: method.into(),
            url: shown_url,
            attempt,
            status,
            millis,
            outcome,
        });
        let result = match result {
            Ok(mut reply) if api.format == BodyFormat::Corezoid => {
                match corezoid_answer(&mut reply) {
                    None => Ok(reply),
                    Some(refused) => Err(refused),
                }
            }
            other => other,
        };
        match result {
            Ok(reply) => {
                self.task
                    .data
                    .retain(|k, _| !k.starts_with("__conveyor_api_return_"));
                match &api.response {
                    Some(mapping) => {
                        let mut reply_data = Map::new();
                        reply_data.insert("body".into(), reply.body);
                        reply_data.insert("status".into(), Value::from(reply.status));
                        reply_data.insert("headers".into(), Value::Object(reply.headers));
                        let reply_data = Value::Object(reply_data);
                        let env = self.env();
                        let mut values = Vec::with_capacity(mapping.len());
                        for (key, template) in mapping {
                            match template.render(&reply_data, &env) {
                                Ok(v) => {
                                    // A secret echoed into a key that is not secret is cut out.
                                    let v = if mask::is_secret(
                                        &self.loaded.process,
                                        &self.task.secret_keys,
                                        key,
                                    ) {
                                        v
                                    } else {
                                        mask::mask_owned(v, &secrets)
                                    };
                                    values.push((key.clone(), v))
                                }
                                Err(e) => {
                                    drop(env);
                                    self.fail(
                                        "api",
                                        "software",
                                        "api_bad_answer",
                                        format!("response `{key}`: {e}"),
                                        Some(reply.status),
                                    );
                                    return Ok(());
                                }
                            }
                        }
                        drop(env);
                        self.task.data.extend(values);
                    }
                    None => {
                        // Refuse a reply that would make the task too large before it is
                        // merged (the task keeps its data as it was).
                        let size = crate::input::json_size(&self.task.data)
                            .saturating_add(crate::input::json_size(&reply.body));
                        if size > crate::ops::MAX_TASK_BYTES {
                            self.fail(
                                "api",
                                "software",
                                "api_task_size_overflow_limit",
                                format!(
                                    "the task would be about {size} bytes with the reply; the limit is {}",
                                    crate::ops::MAX_TASK_BYTES
                                ),
                                Some(reply.status),
                            );
                            return Ok(());
                        }
                        match reply.body {
                            Value::Object(map) => {
                                for (key, value) in map {
                                    let value = if mask::is_secret(
                                        &self.loaded.process,
                                        &self.task.secret_keys,
                                        &key,
                                    ) {
                                        value
                                    } else {
                                        mask::mask_owned(value, &secrets)
                                    };
                                    self.task.data.insert(key, value);
                                }
                            }
                            array => {
                                self.task.data.insert(
                                    "__conveyor_api_array__".into(),
                                    mask::mask_owned(array, &secrets),
                                );
                            }
                        }
                    }
                }
                let size = crate::input::json_size(&self.task.data);
                if size > crate::ops::MAX_TASK_BYTES {
                    self.fail(
                        "api",
                        "software",
                        "api_task_size_overflow_limit",
                        format!("the task would be {size} bytes"),
                        Some(reply.status),
                    );
                    return Ok(());
                }
                self.task.attempt = 0;
                self.resume = None;
                self.goto(&api.next, "next");
            }
            Err(failure) => {
                if failure.transient
                    && let Some(retry) = &api.retry
                    && attempt < retry.attempts
                {
                    let backoff = retry.backoff.as_millis() as i64;
                    let delay = backoff
                        .saturating_mul(1 << (attempt - 1).min(20))
                        .min(retry.max.as_millis() as i64);
                    self.wait(
                        Some((self.now + delay, WakeKind::Retry)),
                        &format!("retry {} of {}", attempt + 1, retry.attempts),
                    );
                    return Ok(());
                }
                self.task.attempt = 0;
                if let Some(body @ Value::Object(_)) = &failure.body {
                    // A server may echo what it was sent: secrets are cut out first.
                    self.task.data.insert(
                        "__conveyor_api_return_body__".into(),
                        mask::mask_value(body, &secrets),
                    );
                }
                let description = mask::mask_text(&failure.description, &secrets);
                self.fail(
                    "api",
                    failure.type_error,
                    failure.tag,
                    description,
                    failure.http_code,
                );
            }
        }
        Ok(())
    }

    pub(super) fn build_request(
        &mut self,
        api: &ApiCall,
    ) -> std::result::Result<http::Request, String> {
        // A fixed URL (most are) is parsed once for all tasks.
        let (url_text, parsed) = match api.url.as_literal() {
            Some(text) => (
                std::borrow::Cow::Borrowed(text),
                self.rt.urls.parse(text.trim()),
            ),
            None => {
                let text = self.render_text(&api.url)?;
                let parsed = reqwest::Url::parse(text.trim()).map_err(|e| e.to_string());
                (std::borrow::Cow::Owned(text), parsed)
            }
        };
        let mut url = parsed.map_err(|e| {
            format!(
                "`{}` is not a URL: {e}",
                mask::mask_text(&url_text, &self.revealed)
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "only http and https URLs are called, not `{}`",
                url.scheme()
            ));
        }
        if !api.query.is_empty() {
            let mut pairs = Vec::with_capacity(api.query.len());
            for (key, value) in &api.query {
                let v = self
                    .render_value(value)
                    .map_err(|m| format!("query `{key}`: {m}"))?;
                pairs.push((key.as_str(), http::into_text(v)));
            }
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let mut headers =
            Vec::with_capacity(api.headers.len() + usize::from(api.idempotency_key.is_some()));
        for (name, template) in &api.headers {
            let value = self
                .render_text(template)
                .map_err(|m| format!("header `{name}`: {m}"))?;
            headers.push((name.clone(), value));
        }
        if let Some(key) = &api.idempotency_key {
            let value = self
                .render_text(key)
                .map_err(|m| format!("idempotency key: {m}"))?;
            headers.push((api.idempotency_header.clone(), value));
        }
        let body = match &api.body {
            Some(b) => Some((
                api.format,
                self.render_value(b).map_err(|m| format!("body: {m}"))?,
            )),
            None => None,
        };
        let mut body = match api.format {
            BodyFormat::Corezoid => Some((BodyFormat::Corezoid, self.corezoid_ops(body))),
            _ => body,
        };
        let sys = match &api.send_sys {
            Some(send_sys) => {
                self.sys_body(api, &mut body);
                Some(self.sys(send_sys)?)
            }
            None => None,
        };
        Ok(http::Request {
            method: api.method,
            url,
            headers,
            body,
            timeout: api.request_timeout,
            max_bytes: api.max_response_bytes,
            sys,
            require_body: api.require_body,
            want_headers: api.response_reads_headers(),
        })
    }
}

/// How long past its request's timeout a call's place stays taken when its engine dies
/// during the call (a live engine gives it back as soon as the call returns).
const PLACE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// One of the `limit` places of a node's calls in flight on every engine of a shared
/// store: waits, looking again every few milliseconds, while all are taken.
async fn shared_place(
    store: &dyn conveyor_store::Store,
    process: u64,
    node: &str,
    limit: u32,
    hold: std::time::Duration,
) -> Result<conveyor_store::CallSlot> {
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        if let Some(place) = store.call_slot(process, node, limit, hold).await? {
            return Ok(place);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(25));
    }
}

impl Step<'_> {
    /// `send_sys`: a JSON body (of a method that sends one) carries `sys`, which task,
    /// process and node sent it.
    fn sys_body(&self, api: &ApiCall, body: &mut Option<(BodyFormat, Value)>) {
        use conveyor_model::HttpMethod;
        if api.format != BodyFormat::Json
            || matches!(
                api.method,
                HttpMethod::Get | HttpMethod::Head | HttpMethod::Delete
            )
        {
            return;
        }
        let sys = serde_json::json!({
            "ref": self.task.reference,
            "obj_id": self.task.id,
            "conv_id": self.task.process,
            "node_id": self.task.node,
        });
        match body {
            Some((_, Value::Object(map))) => {
                map.insert("sys".into(), sys);
            }
            Some(_) => {}
            None => {
                let mut map = Map::new();
                map.insert("sys".into(), sys);
                *body = Some((BodyFormat::Json, Value::Object(map)));
            }
        }
    }

    /// `send_sys`'s URL params, with the secret rendered for the signature only.
    fn sys(&mut self, send_sys: &SendSys) -> std::result::Result<http::Sys, String> {
        let secret = match &send_sys.secret {
            Some(template) => {
                let secret = self
                    .render_text(template)
                    .map_err(|m| format!("send_sys secret: {m}"))?;
                if secret.is_empty() {
                    return Err(
                        "send_sys: the secret is empty (give its param, e.g. `process clone --set sys_secret=…`)"
                            .into(),
                    );
                }
                Some(secret)
            }
            None => None,
        };
        Ok(http::Sys {
            conv_id: self.task.process,
            time: self.now.div_euclid(1000),
            secret,
        })
    }

    /// The request of Corezoid's own format: the params as the `data` of one op that
    /// says which task, process and node sends it.
    fn corezoid_ops(&self, params: Option<(BodyFormat, Value)>) -> Value {
        let data = match params {
            Some((_, data @ Value::Object(_))) => data,
            _ => Value::Object(Map::new()),
        };
        serde_json::json!({
            "ops": [{
                "type": "data",
                "ref": self.task.reference,
                "obj_id": self.task.id,
                "conv_id": self.task.process,
                "node_id": self.task.node,
                "data": data,
                "extra": {},
            }]
        })
    }
}

/// A reply in Corezoid's own format, `{"request_proc":"ok","ops":[{"proc":"ok",
/// "res_data":{…}}]}`: the reply's body becomes its `res_data`; anything else is an
/// error of the node (returned) with Corezoid's tags (`api_no_request_proc`, `api_no_ops`, `api_bad_answer`
/// when the op's `proc` is not `ok`, `api_bad_res_data`).
fn corezoid_answer(reply: &mut http::Reply) -> Option<Failure> {
    let status = reply.status;
    let refuse = |tag: &'static str, description: String| Failure {
        type_error: "software",
        tag,
        description,
        http_code: Some(status),
        transient: false,
        body: None,
    };
    let body = std::mem::take(&mut reply.body);
    let proc = body.get("request_proc").and_then(Value::as_str);
    if proc != Some("ok") {
        return Some(refuse(
            "api_no_request_proc",
            match proc {
                Some(other) => {
                    format!("the Corezoid-format reply has request_proc `{other}`, not `ok`")
                }
                None => "the Corezoid-format reply has no `request_proc`".into(),
            },
        ));
    }
    let Some(op) = body
        .get("ops")
        .and_then(Value::as_array)
        .and_then(|ops| ops.first())
    else {
        return Some(refuse(
            "api_no_ops",
            "the Corezoid-format reply has no `ops`".into(),
        ));
    };
    match op.get("proc").and_then(Value::as_str) {
        Some("ok") => {}
        other => {
            let said = op
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            return Some(refuse(
                "api_bad_answer",
                format!(
                    "the Corezoid-format reply's op has proc `{}`{said}",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    reply.body = match op.get("res_data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data.clone(),
        Some(other) => {
            return Some(refuse(
                "api_bad_res_data",
                format!(
                    "the Corezoid-format reply's res_data is not an object: {}",
                    http::shorten(&other.to_string())
                ),
            ));
        }
    };
    None
}
