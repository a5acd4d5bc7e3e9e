//! Long operations run in their own task and report through [`Progress`];
//! the client receives the events as an NDJSON stream that always ends with
//! `done` or `failed`. A client that goes away does not abort the
//! operation half-way: it finishes (or fails and cleans up) on its own.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use banger_api::{Event, NDJSON, encode_event};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::error::Failure;

#[derive(Clone)]
pub struct Progress {
    tx: mpsc::UnboundedSender<Event>,
}

impl Progress {
    fn send(&self, event: Event) {
        // The client may have gone; the operation goes on regardless.
        let _ = self.tx.send(event);
    }
    #[allow(dead_code)] // used by the image and VM operations as they land
    pub fn phase(&self, name: &str, message: impl Into<String>) {
        self.send(Event::Phase {
            name: name.into(),
            message: message.into(),
        });
    }
    #[allow(dead_code)]
    pub fn progress(&self, phase: &str, done: u64, total: Option<u64>) {
        self.send(Event::Progress {
            phase: phase.into(),
            done,
            total,
        });
    }
    pub fn info(&self, message: impl Into<String>) {
        self.send(Event::Info {
            message: message.into(),
        });
    }
    #[allow(dead_code)]
    pub fn warn(&self, message: impl Into<String>) {
        self.send(Event::Warning {
            message: message.into(),
        });
    }
}

/// Runs `op` in a task of its own and answers with its progress stream.
pub fn stream_operation<F, Fut, T>(op: F) -> Response
where
    F: FnOnce(Progress) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
    T: Serialize,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Progress { tx: tx.clone() };
    tokio::spawn(async move {
        let last = match op(progress).await {
            Ok(result) => match serde_json::to_value(result) {
                Ok(result) => Event::Done { result },
                Err(e) => Event::Failed {
                    error: Failure::internal(format!("cannot encode result: {e}")).error,
                },
            },
            Err(failure) => Event::Failed {
                error: failure.error,
            },
        };
        let _ = tx.send(last);
    });
    let body = UnboundedReceiverStream::new(rx)
        .map(|event| Ok::<_, Infallible>(Bytes::from(encode_event(&event))));
    ([(CONTENT_TYPE, NDJSON)], Body::from_stream(body)).into_response()
}
