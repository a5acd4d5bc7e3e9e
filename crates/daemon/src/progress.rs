//! Long operations run in their own task and report through the
//! orchestrator's [`Progress`]; the client receives the events as an
//! NDJSON stream that always ends with `done` or `failed`. A client that
//! goes away does not abort the operation half-way: it finishes (or fails
//! and cleans up) on its own.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use banger_api::{Event, NDJSON, encode_event};
use banger_orchestrator::{Error, Progress};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::api_error;

/// Runs `op` in a task of its own and answers with its progress stream.
pub fn stream_operation<F, Fut, T>(op: F) -> Response
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
    T: Serialize,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Progress::new(tx.clone());
    tokio::spawn(async move {
        let last = match op(progress).await {
            Ok(result) => match serde_json::to_value(result) {
                Ok(result) => Event::Done { result },
                Err(e) => Event::Failed {
                    error: api_error(&Error::internal(format!("cannot encode result: {e}"))),
                },
            },
            Err(e) => Event::Failed {
                error: api_error(&e),
            },
        };
        let _ = tx.send(last);
    });
    let body = UnboundedReceiverStream::new(rx)
        .map(|event| Ok::<_, Infallible>(Bytes::from(encode_event(&event))));
    ([(CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use banger_api::{ErrorCode, NdjsonDecoder};

    async fn events_of(resp: Response) -> Vec<Event> {
        assert_eq!(resp.headers()[CONTENT_TYPE], NDJSON);
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let mut dec = NdjsonDecoder::default();
        let events = dec.push(&bytes).unwrap();
        assert!(dec.leftover().is_empty());
        events
    }

    #[tokio::test]
    async fn streams_events_in_order_then_the_result() {
        let resp = stream_operation(|p| async move {
            p.phase("ext4", "writing");
            p.progress("ext4", 1, Some(2));
            p.info("hello");
            p.warn("careful");
            Ok::<_, Error>(serde_json::json!({"name": "x"}))
        });
        let events = events_of(resp).await;
        assert_eq!(events.len(), 5);
        assert!(matches!(&events[0], Event::Phase { name, .. } if name == "ext4"));
        assert!(matches!(
            &events[1],
            Event::Progress {
                done: 1,
                total: Some(2),
                ..
            }
        ));
        assert!(matches!(&events[2], Event::Info { message } if message == "hello"));
        assert!(matches!(&events[3], Event::Warning { .. }));
        assert_eq!(
            events[4],
            Event::Done {
                result: serde_json::json!({"name": "x"})
            }
        );
    }

    #[tokio::test]
    async fn failure_ends_the_stream_with_its_error() {
        let resp = stream_operation(|p| async move {
            p.info("starting");
            Err::<(), _>(Error::not_found("image \"x\" not found"))
        });
        let events = events_of(resp).await;
        match events.last() {
            Some(Event::Failed { error }) => {
                assert_eq!(error.code, ErrorCode::NotFound);
                assert_eq!(error.message, "image \"x\" not found");
            }
            other => panic!("last event {other:?}"),
        }
    }
}
