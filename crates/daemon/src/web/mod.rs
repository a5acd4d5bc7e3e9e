//! The web UI, served on `web_listen_addr` (off unless set): a page and
//! its script, embedded in the binary (no CDN, no build step), a
//! server-sent event stream of the VM list with stats, and the very same
//! `/v1` API the CLI uses on the Unix socket, behind a guard.
//!
//! The guard ([`guard`]): every request needs the install's token (a
//! cookie, set by the link `banger web url` prints, or the
//! `X-Banger-Token` header); anything that changes state needs the header
//! (a cookie alone rides along with requests a browser makes for other
//! sites); a request whose `Origin` is not this server's is refused. A
//! request without a valid token gets a bare 401 and nothing else.

mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use banger_api::WebInfo;
use banger_model::VmState;
use tokio::net::TcpListener;

pub use token::Token;

use crate::server::Daemon;

const COOKIE: &str = "banger_token";
const HEADER: &str = "x-banger-token";
const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
/// How often the event stream sends the VM list.
const TICK: Duration = Duration::from_secs(1);

/// The web UI, bound and ready to serve.
pub struct Web {
    listener: TcpListener,
    token: Token,
}

/// Binds `addr` and loads (or makes) the token. Failing is not fatal for
/// the daemon: the reason is logged and `banger web url` shows it.
pub async fn bind(addr: SocketAddr, token_path: &std::path::Path) -> (Option<Web>, WebInfo) {
    let off = |reason: String| {
        tracing::warn!(listen = %addr, error = %reason, "web UI: off");
        (
            None,
            WebInfo {
                url: None,
                reason: Some(reason),
            },
        )
    };
    let token = match Token::load_or_create(token_path) {
        Ok(t) => t,
        Err(e) => return off(format!("the web UI has no token: {e}")),
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            return off(format!(
                "the web UI cannot listen on {addr}: {e} (change web_listen_addr)"
            ));
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    if !bound.ip().is_loopback() {
        tracing::warn!(listen = %bound, "web UI: listening beyond this host, as web_listen_addr says");
    }
    tracing::info!(listen = %bound, "web UI: serving ('banger web url' prints the link)");
    let url = format!("http://{bound}/?token={}", token.as_str());
    (
        Some(Web { listener, token }),
        WebInfo {
            url: Some(url),
            reason: None,
        },
    )
}

/// Serves until the daemon's process ends.
pub async fn serve(web: Web, daemon: Daemon) {
    let app = router(daemon, web.token);
    if let Err(e) = axum::serve(web.listener, app).await {
        tracing::warn!(error = %e, "web UI: stopped serving");
    }
}

fn router(daemon: Daemon, token: Token) -> Router {
    let token = Arc::new(token);
    let pages = Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/web/events", get(events))
        .with_state(daemon.clone());
    pages
        .merge(crate::routes::router(daemon))
        .layer(middleware::from_fn_with_state(token.clone(), guard))
        .layer(axum::Extension(token))
}

async fn guard(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let by_header = headers
        .get(HEADER)
        .is_some_and(|v| token.matches(v.as_bytes()));
    let by_cookie = cookie(headers, COOKIE).is_some_and(|v| token.matches(v.as_bytes()));
    let by_link = req.method() == Method::GET
        && req.uri().path() == "/"
        && query(req.uri().query().unwrap_or(""), "token")
            .is_some_and(|v| token.matches(v.as_bytes()));
    if !(by_header || by_cookie || by_link) {
        return bare(StatusCode::UNAUTHORIZED);
    }
    if cross_origin(headers) {
        return bare(StatusCode::FORBIDDEN);
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads && !by_header {
        return bare(StatusCode::UNAUTHORIZED);
    }
    if by_link {
        // The token leaves the address bar (and the history) for a cookie
        // that scripts cannot read and other sites' requests do not carry.
        let mut resp = bare(StatusCode::SEE_OTHER);
        let h = resp.headers_mut();
        h.insert(header::LOCATION, HeaderValue::from_static("/"));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            token.as_str()
        )) {
            h.insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A status and nothing else: no body, no hint.
fn bare(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// Whether a browser says the request comes from another site: an
/// `Origin` that is not `http://` and this request's own `Host`, or
/// `Sec-Fetch-Site: cross-site` / `same-site` (another port of the same
/// host is another origin too).
fn cross_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return true;
    }
    match headers.get(header::ORIGIN) {
        None => false,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            origin.as_bytes() != [b"http://".as_slice(), host].concat()
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn query<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// The page (only a token holder gets here); the script reads the token
/// from its `<meta>` for the header that mutations need (the cookie is
/// out of its reach).
async fn index(axum::Extension(token): axum::Extension<Arc<Token>>) -> Response {
    // 64 hex digits: nothing to escape.
    let page = INDEX.replace("{{TOKEN}}", token.as_str());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// `GET /web/events`: the VMs (with their stats), images and kernels,
/// once a second, as `state` events. A client that goes away ends it.
async fn events(State(d): State<Daemon>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        loop {
            let event = match state(&d).await {
                Ok(json) => Event::default().event("state").data(json),
                Err(e) => Event::default().event("failure").data(e),
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn state(d: &Daemon) -> Result<String, String> {
    let orch = d.orch();
    let vms = orch.list_vms().await.map_err(|e| e.message)?;
    let mut stats = serde_json::Map::new();
    for vm in vms
        .iter()
        .filter(|v| matches!(v.state, VmState::Running | VmState::Paused))
    {
        // Deleted since the list: it goes with the next tick.
        if let Ok(s) = orch.vm_stats(vm.name.as_str()).await
            && let Ok(v) = serde_json::to_value(s)
        {
            stats.insert(vm.name.to_string(), v);
        }
    }
    let images = orch.list_images().await.map_err(|e| e.message)?;
    let kernels = orch.list_kernels().await.map_err(|e| e.message)?;
    serde_json::to_string(&serde_json::json!({
        "vms": vms,
        "stats": stats,
        "images": images,
        "kernels": kernels,
    }))
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let host = ("host", "127.0.0.1:7878");
        assert!(!cross_origin(&headers(&[host])));
        assert!(!cross_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7878")
        ])));
        assert!(cross_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(cross_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7879")
        ])));
        assert!(cross_origin(&headers(&[host, ("origin", "null")])));
        assert!(cross_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!cross_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
    }

    #[test]
    fn cookies_and_queries() {
        let h = headers(&[("cookie", "a=1; banger_token=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(query("x=1&token=t", "token"), Some("t"));
        assert_eq!(query("tokenx=1", "token"), None);
    }
}
