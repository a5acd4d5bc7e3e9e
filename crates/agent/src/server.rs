//! The HTTP/2 server and its routes. Only this module and the handlers'
//! [`Reply`] values know about status codes.

use std::convert::Infallible;

use banger_agent_proto::{ErrorReply, MAX_JSON, limits, route};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::ChannelBody;
use crate::{Agent, exec, identity, system, tar};

pub type Reply = Response<UnsyncBoxBody<Bytes, Infallible>>;

pub async fn serve<S>(agent: Agent, io: S) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let agent = agent.clone();
        async move { Ok::<_, Infallible>(route(agent, req).await) }
    });
    http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(limits::STREAM_WINDOW)
        .initial_connection_window_size(limits::CONNECTION_WINDOW)
        .max_frame_size(limits::MAX_FRAME)
        .max_header_list_size(limits::MAX_HEADER_LIST)
        .max_concurrent_streams(limits::MAX_STREAMS)
        .max_send_buf_size(limits::MAX_SEND_BUF)
        .serve_connection(TokioIo::new(io), service)
        .await
}

async fn route(agent: Agent, req: Request<Incoming>) -> Reply {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match (method, path.as_str()) {
        (Method::GET, route::READY) => system::ready().await,
        (Method::POST, route::EXEC) => exec::exec(&agent, req.into_body()).await,
        (Method::POST, route::SIGNAL) => match read_json(req.into_body()).await {
            Ok(r) => exec::signal(&agent, r),
            Err(reply) => reply,
        },
        (Method::POST, route::RESIZE) => match read_json(req.into_body()).await {
            Ok(r) => exec::resize(&agent, r),
            Err(reply) => reply,
        },
        (Method::POST, route::TAR_IN) => tar::tar_in(req.into_body()).await,
        (Method::POST, route::TAR_OUT) => match read_json(req.into_body()).await {
            Ok(r) => tar::tar_out(r).await,
            Err(reply) => reply,
        },
        (Method::POST, route::HOSTNAME) => match read_json(req.into_body()).await {
            Ok(r) => system::hostname(&agent, r).await,
            Err(reply) => reply,
        },
        (Method::POST, route::CLOCK) => match read_json(req.into_body()).await {
            Ok(r) => system::clock(r),
            Err(reply) => reply,
        },
        (Method::POST, route::IDENTITY) => match read_json(req.into_body()).await {
            Ok(r) => identity::identity(&agent, r).await,
            Err(reply) => reply,
        },
        (method, path) => error(
            StatusCode::NOT_FOUND,
            format!("no route {method} {path} in this agent"),
        ),
    }
}

/// A JSON request body, read up to [`MAX_JSON`] bytes; a 400 reply when
/// it is bigger or not the message expected.
pub async fn read_json<T: serde::de::DeserializeOwned>(body: Incoming) -> Result<T, Reply> {
    let bytes = match Limited::new(body, MAX_JSON).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body (at most {MAX_JSON} bytes): {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")))
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut reply = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    reply
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(
        status,
        &ErrorReply {
            error: message.into(),
        },
    )
}

pub fn no_content() -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}

/// A 200 whose body is the frames sent into the returned channel.
pub fn stream(body: ChannelBody) -> Reply {
    Response::new(body.boxed_unsync())
}
