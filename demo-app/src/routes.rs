//! The HTTP routes. Pure request → response; connection handling (and the
//! drain's `Connection: close`) lives in `server.rs`.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::log::Ident;

/// Longest `/sleep` we honour, in ms.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// What the routes need to know about this process.
#[derive(Debug)]
pub struct App {
    /// `generation=G pid=P\n`, built once.
    root_body: Bytes,
}

impl App {
    pub fn new(who: &Ident) -> Self {
        App {
            root_body: Bytes::from(format!("{who}\n")),
        }
    }

    /// Every response has a `Full` body, so hyper always sends a
    /// `content-length` (never chunked): clients can tell a complete answer.
    pub async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        match req.uri().path() {
            "/" => text(StatusCode::OK, self.root_body.clone()),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/sleep" => match sleep_ms(req.uri().query()) {
                Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    text(StatusCode::OK, format!("slept {ms} ms\n"))
                }
                Err(msg) => text(StatusCode::BAD_REQUEST, msg),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The `ms` of `/sleep?ms=N`, capped at [`MAX_SLEEP_MS`].
pub fn sleep_ms(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("ms="))
        .ok_or_else(|| "missing ms: use /sleep?ms=N\n".to_owned())?;
    let ms: u64 = value
        .parse()
        .map_err(|_| format!("bad ms `{value}`: expected a whole number of milliseconds\n"))?;
    Ok(ms.min(MAX_SLEEP_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn sleep_query() {
        assert_eq!(sleep_ms(Some("ms=500")), Ok(500));
        assert_eq!(sleep_ms(Some("x=1&ms=0")), Ok(0));
        assert_eq!(sleep_ms(Some("ms=999999999")), Ok(MAX_SLEEP_MS));
        assert!(sleep_ms(None).is_err());
        assert!(sleep_ms(Some("")).is_err());
        assert!(sleep_ms(Some("ms=")).is_err());
        assert!(sleep_ms(Some("ms=-5")).is_err());
        assert!(sleep_ms(Some("ms=1.5")).is_err());
        assert!(sleep_ms(Some("mss=5")).is_err());
    }

    async fn get(app: &App, method: Method, uri: &str) -> (StatusCode, String) {
        let req = Request::builder().method(method).uri(uri).body(()).unwrap();
        let resp = app.respond(&req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes() {
        let app = App::new(&Ident {
            generation: "7".into(),
            slot: "0".into(),
            pid: 42,
        });
        assert_eq!(
            get(&app, Method::GET, "/").await,
            (StatusCode::OK, "generation=7 pid=42\n".into())
        );
        assert_eq!(
            get(&app, Method::GET, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(
            get(&app, Method::GET, "/sleep?ms=1").await,
            (StatusCode::OK, "slept 1 ms\n".into())
        );
        assert_eq!(
            get(&app, Method::GET, "/sleep").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&app, Method::GET, "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get(&app, Method::POST, "/").await.0, StatusCode::NOT_FOUND);
    }
}
