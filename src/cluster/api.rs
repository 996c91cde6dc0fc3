//! The only code that sends requests: JSON objects in and out, one request shape per verb.
//! Transient failures (429, 5xx, dropped connections) are retried with a bounded backoff;
//! everything else becomes an [`Error`] that names the request and the fix.

use std::time::Duration;

use http::{Method, Request, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::{Target, api_error, transport_error};
use crate::calico::policy::{API_VERSION, CalicoKind};
use crate::error::{Error, Result};

const MAX_ATTEMPTS: u32 = 5;
// Pages of a thousand: a fleet of a few thousand nodes in a few round trips, and a page of
// even large objects (nodes with their image lists) is a few MiB of text at a time.
const LIST_PAGE_SIZE: u32 = 1000;

#[derive(Clone)]
pub struct Api {
    client: kube::Client,
}

/// Where an object lives in the REST API.
pub fn calico_path(kind: CalicoKind, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut path = format!("/apis/{API_VERSION}");
    if let (true, Some(ns)) = (kind.namespaced(), namespace) {
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push('/');
    path.push_str(kind.plural());
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    path
}

pub fn calico_target(
    verb: &'static str,
    kind: CalicoKind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Target {
    Target {
        verb,
        resource: kind.resource(),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    }
}

/// One page of a LIST answer: the items and where the next page starts.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default)]
    metadata: PageMetadata,
    /// Kubernetes answers `null` for an empty list in some versions.
    #[serde(default = "Option::default")]
    items: Option<Vec<T>>,
}

#[derive(Deserialize, Default)]
struct PageMetadata {
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

enum Outcome {
    Ok(String),
    NotFound,
}

impl Api {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
        target: &Target,
        not_found_ok: bool,
    ) -> Result<Outcome> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON serialises"));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(header::ACCEPT, "application/json");
            if let Some(ct) = content_type {
                builder = builder.header(header::CONTENT_TYPE, ct);
            }
            let request = builder
                .body(bytes.clone().unwrap_or_default())
                .map_err(|e| Error::usage(format!("invalid request {uri}: {e}")))?;
            tracing::debug!(method = %method, uri, attempt, "request");
            let retry_after = match self.client.request_text(request).await {
                Ok(text) => return Ok(Outcome::Ok(text)),
                Err(kube::Error::Api(status)) if status.code == 404 && not_found_ok => {
                    return Ok(Outcome::NotFound);
                }
                Err(kube::Error::Api(status)) => {
                    let transient = matches!(status.code, 429 | 500 | 502 | 503 | 504);
                    if !transient || attempt >= MAX_ATTEMPTS {
                        return Err(api_error(target, &status));
                    }
                    status
                        .details
                        .as_ref()
                        .map(|d| d.retry_after_seconds)
                        .filter(|s| *s > 0)
                        .map(|s| Duration::from_secs(u64::from(s.min(10))))
                }
                Err(err @ (kube::Error::HyperError(_) | kube::Error::Service(_)))
                    if attempt < MAX_ATTEMPTS && is_retryable_transport(&err) =>
                {
                    tracing::debug!(error = %err, "transport error, retrying");
                    None
                }
                Err(err) => return Err(transport_error(target, err)),
            };
            let backoff =
                retry_after.unwrap_or_else(|| Duration::from_millis(200 * 2u64.pow(attempt - 1)));
            tracing::info!(?backoff, attempt, "transient API error; retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    fn parse(text: &str, target: &Target) -> Result<Value> {
        serde_json::from_str(text).map_err(|e| {
            Error::unreadable(
                target.describe(),
                format!("the server's answer is not JSON: {e}"),
            )
        })
    }

    /// GET a single object; `None` when it does not exist.
    pub async fn get(&self, path: &str, target: &Target) -> Result<Option<Value>> {
        match self
            .send(Method::GET, path, None, None, target, true)
            .await?
        {
            Outcome::Ok(text) => Self::parse(&text, target).map(Some),
            Outcome::NotFound => Ok(None),
        }
    }

    /// LIST every item, page by page; `None` when the resource type is not served.
    pub async fn list(
        &self,
        path: &str,
        label_selector: Option<&str>,
        target: &Target,
    ) -> Result<Option<Vec<Value>>> {
        let mut items = Vec::new();
        let served = self
            .list_pages(path, label_selector, target, |page: Vec<Value>| {
                items.extend(page)
            })
            .await?;
        Ok(served.then_some(items))
    }

    /// Whether a LIST would return anything: one page of one item. False too when the
    /// resource type is not served.
    pub async fn any(
        &self,
        path: &str,
        label_selector: Option<&str>,
        target: &Target,
    ) -> Result<bool> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", "1");
        if let Some(selector) = label_selector {
            query.append_pair("labelSelector", selector);
        }
        let uri = format!("{path}?{}", query.finish());
        match self
            .send(Method::GET, &uri, None, None, target, true)
            .await?
        {
            Outcome::Ok(text) => {
                let page: Page<serde::de::IgnoredAny> =
                    serde_json::from_str(&text).map_err(|e| {
                        Error::unreadable(
                            target.describe(),
                            format!("the server's answer is not a list: {e}"),
                        )
                    })?;
                Ok(page.items.is_some_and(|items| !items.is_empty()))
            }
            Outcome::NotFound => Ok(false),
        }
    }

    /// LIST page by page (`limit`/`continue`), handing each page's items to `on_page` as `T`:
    /// only the fields `T` names are kept, and a page's text is dropped before the next one is
    /// asked for. False when the resource type is not served.
    pub async fn list_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        label_selector: Option<&str>,
        target: &Target,
        mut on_page: impl FnMut(Vec<T>),
    ) -> Result<bool> {
        let mut continue_token: Option<String> = None;
        loop {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &LIST_PAGE_SIZE.to_string());
            if let Some(selector) = label_selector {
                query.append_pair("labelSelector", selector);
            }
            if let Some(token) = &continue_token {
                query.append_pair("continue", token);
            }
            let uri = format!("{path}?{}", query.finish());
            let page: Page<T> = match self
                .send(Method::GET, &uri, None, None, target, true)
                .await?
            {
                Outcome::Ok(text) => serde_json::from_str(&text).map_err(|e| {
                    Error::unreadable(
                        target.describe(),
                        format!("the server's answer is not a list: {e}"),
                    )
                })?,
                Outcome::NotFound => return Ok(false),
            };
            on_page(page.items.unwrap_or_default());
            continue_token = page.metadata.continue_token.filter(|t| !t.is_empty());
            if continue_token.is_none() {
                return Ok(true);
            }
        }
    }

    /// Send `body` with `method` and return the object the server answers with.
    async fn send_object(
        &self,
        method: Method,
        content_type: &str,
        path: &str,
        body: &Value,
        dry_run: bool,
        target: &Target,
    ) -> Result<Value> {
        let uri = with_dry_run(path, dry_run);
        match self
            .send(method, &uri, Some(content_type), Some(body), target, false)
            .await?
        {
            Outcome::Ok(text) => Self::parse(&text, target),
            Outcome::NotFound => unreachable!("404 is an error here"),
        }
    }

    pub(super) async fn create(
        &self,
        path: &str,
        body: &Value,
        dry_run: bool,
        target: &Target,
    ) -> Result<Value> {
        self.send_object(
            Method::POST,
            "application/json",
            path,
            body,
            dry_run,
            target,
        )
        .await
    }

    /// PUT with the body's metadata.resourceVersion: a concurrent change answers 409.
    pub(super) async fn replace(
        &self,
        path: &str,
        body: &Value,
        dry_run: bool,
        target: &Target,
    ) -> Result<Value> {
        self.send_object(Method::PUT, "application/json", path, body, dry_run, target)
            .await
    }

    pub(super) async fn merge_patch(
        &self,
        path: &str,
        patch: &Value,
        dry_run: bool,
        target: &Target,
    ) -> Result<Value> {
        self.send_object(
            Method::PATCH,
            "application/merge-patch+json",
            path,
            patch,
            dry_run,
            target,
        )
        .await
    }

    /// DELETE guarded by the resourceVersion we read, so a concurrent edit answers 409.
    /// Returns false when the object was already gone.
    pub(super) async fn delete(
        &self,
        path: &str,
        resource_version: Option<&str>,
        dry_run: bool,
        target: &Target,
    ) -> Result<bool> {
        let mut options = serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions"});
        if let Some(rv) = resource_version {
            options["preconditions"] = serde_json::json!({"resourceVersion": rv});
        }
        if dry_run {
            options["dryRun"] = serde_json::json!(["All"]);
        }
        let uri = with_dry_run(path, dry_run);
        Ok(matches!(
            self.send(
                Method::DELETE,
                &uri,
                Some("application/json"),
                Some(&options),
                target,
                true
            )
            .await?,
            Outcome::Ok(_)
        ))
    }

    /// POST a review-style object (SelfSubjectReview, SelfSubjectAccessReview).
    pub(super) async fn post(
        &self,
        path: &str,
        body: &Value,
        target: &Target,
    ) -> Result<Option<Value>> {
        match self
            .send(
                Method::POST,
                path,
                Some("application/json"),
                Some(body),
                target,
                true,
            )
            .await?
        {
            Outcome::Ok(text) => Self::parse(&text, target).map(Some),
            Outcome::NotFound => Ok(None),
        }
    }
}

fn with_dry_run(path: &str, dry_run: bool) -> String {
    if dry_run {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{path}{separator}dryRun=All")
    } else {
        path.to_string()
    }
}

/// Connection resets and refused connections are worth another try; TLS and DNS failures are not.
fn is_retryable_transport(err: &kube::Error) -> bool {
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(" {inner} {inner:?}"));
        source = inner.source();
    }
    let text = text.to_lowercase();
    [
        "connection reset",
        "broken pipe",
        "connection closed",
        "incompletemessage",
        "incomplete message",
        "timed out",
        "timeout",
        "unexpected eof",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
