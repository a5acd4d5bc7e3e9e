//! How failures leave the daemon: the orchestrator's error kinds become an
//! HTTP status and the `{"error": ...}` envelope, whose message the CLI
//! prints as is. [`status_of`] is the only place that knows which status
//! and code a kind gets.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use banger_api::{ApiError, ErrorBody, ErrorCode};
use banger_orchestrator::{Error, ErrorKind};
use serde::de::DeserializeOwned;

/// The HTTP status and the API's error code of each kind of failure.
pub fn status_of(kind: ErrorKind) -> (StatusCode, ErrorCode) {
    match kind {
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
        ErrorKind::Conflict => (StatusCode::CONFLICT, ErrorCode::Conflict),
        ErrorKind::BootTimeout => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::BootTimeout),
        // Clients see one code for both: neither is theirs to fix, and
        // the message says which operation failed.
        ErrorKind::Host | ErrorKind::Internal => {
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
        }
    }
}

/// The envelope's error for `e`, as a streamed operation's `failed` event
/// carries it.
pub fn api_error(e: &Error) -> ApiError {
    ApiError::new(status_of(e.kind).1, e.message.clone())
}

/// A handler's failure: an orchestrator error, answered through
/// [`status_of`].
#[derive(Debug)]
pub struct Failure(pub Error);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, code) = status_of(self.0.kind);
        let error = ApiError::new(code, self.0.message);
        (status, Json(ErrorBody { error })).into_response()
    }
}

/// `Json<T>` whose rejection is our error envelope with a one-line message,
/// instead of axum's plain-text body.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(Failure(Error::invalid(format!(
                "malformed request body: {}",
                rejection.body_text().replace('\n', " ")
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_keeps_the_status_and_code_it_had() {
        for (kind, status, code) in [
            (ErrorKind::Invalid, 400, "bad_request"),
            (ErrorKind::NotFound, 404, "not_found"),
            (ErrorKind::Conflict, 409, "conflict"),
            (ErrorKind::BootTimeout, 504, "boot_timeout"),
            (ErrorKind::Host, 500, "internal"),
            (ErrorKind::Internal, 500, "internal"),
        ] {
            let (s, c) = status_of(kind);
            assert_eq!((s.as_u16(), c.as_str()), (status, code), "{kind:?}");
        }
    }
}
