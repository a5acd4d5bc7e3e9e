//! The `/v1` API: decode, call the orchestrator, encode. No decisions
//! here beyond HTTP's: what a failure answers is `error::status_of`'s.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use banger_api::{
    AgentInfo, BuildImageRequest, CreateVmRequest, DaemonStatus, ForkVmRequest, KillVmRequest,
    PullImageRequest, RegisterImageRequest, SetVmRequest, SshInfo, VerifiedFile, VmStats,
    WarmRequest, WebInfo,
};
use banger_images::catalog::Entry;
use banger_model::{ImageRecord, KernelRecord, TemplateRecord, VmDefaults, VmRecord};
use banger_orchestrator::{Error, stream_console};

use crate::error::{Failure, JsonBody};
use crate::progress::stream_operation;
use crate::server::Daemon;

pub fn router(daemon: Daemon) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/defaults", get(defaults))
        .route("/v1/web", get(web))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route(
            "/v1/vms/{name}",
            get(show_vm).delete(delete_vm).patch(set_vm),
        )
        .route("/v1/vms/{name}/start", post(start_vm))
        .route("/v1/vms/{name}/stop", post(stop_vm))
        .route("/v1/vms/{name}/restart", post(restart_vm))
        .route("/v1/vms/{name}/kill", post(kill_vm))
        .route("/v1/vms/{name}/pause", post(pause_vm))
        .route("/v1/vms/{name}/fork", post(fork_vm))
        .route("/v1/vms/{name}/resume", post(resume_vm))
        .route("/v1/vms/{name}/ssh", get(ssh_vm))
        .route("/v1/vms/{name}/agent", get(agent_vm))
        .route("/v1/vms/{name}/stats", get(stats_vm))
        .route("/v1/vms/{name}/logs", get(logs_vm))
        .route("/v1/vms/{name}/lease", post(lease_vm))
        .route("/v1/workspaces", post(stage_workspace))
        .route("/v1/images", get(list_images))
        .route("/v1/images/build", post(build_image))
        .route("/v1/images/register", post(register_image))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/{name}", get(show_image).delete(delete_image))
        .route("/v1/images/{name}/verify", post(verify_image))
        .route("/v1/catalog", get(catalog))
        .route("/v1/templates", get(list_templates).post(warm_template))
        .route("/v1/templates/{id}", axum::routing::delete(delete_template))
        .route("/v1/kernels", get(list_kernels))
        .route("/v1/kernels/{name}", get(show_kernel).delete(delete_kernel))
        .fallback(unknown_path)
        .layer(middleware::from_fn(log_request))
        .with_state(daemon)
}

type Answer<T> = Result<Json<T>, Failure>;

async fn status(State(d): State<Daemon>) -> Answer<DaemonStatus> {
    let schema_version = d.orch().schema_version().await?;
    let p = d.orch().paths();
    Ok(Json(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        socket: p.socket(),
        log: p.daemon_log(),
        state_dir: p.state_dir.clone(),
        database: p.database(),
        schema_version,
        uptime_secs: d.inner.started.elapsed().as_secs(),
    }))
}

async fn shutdown(State(d): State<Daemon>) -> Json<serde_json::Value> {
    d.request_shutdown();
    Json(serde_json::json!({ "stopping": true, "pid": std::process::id() }))
}

async fn defaults(State(d): State<Daemon>) -> Json<VmDefaults> {
    Json(d.orch().vm_defaults())
}

async fn web(State(d): State<Daemon>) -> Json<WebInfo> {
    Json(d.inner.web.clone())
}

async fn list_vms(State(d): State<Daemon>) -> Answer<Vec<VmRecord>> {
    Ok(Json(d.orch().list_vms().await?))
}

async fn show_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<VmRecord> {
    Ok(Json(d.orch().vm(&name).await?))
}

async fn create_vm(State(d): State<Daemon>, JsonBody(req): JsonBody<CreateVmRequest>) -> Response {
    stream_operation(move |p| async move { d.orch().create_vm(req, &p).await })
}

async fn start_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Response {
    stream_operation(move |p| async move { d.orch().start_vm(&name, &p).await })
}

async fn restart_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Response {
    stream_operation(move |p| async move { d.orch().restart_vm(&name, &p).await })
}

async fn stop_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<VmRecord> {
    Ok(Json(d.orch().stop_vm(&name).await?))
}

async fn kill_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<KillVmRequest>,
) -> Answer<VmRecord> {
    let signal = req.signal.as_deref().unwrap_or("KILL");
    Ok(Json(d.orch().kill_vm(&name, signal).await?))
}

/// Makes the new VM, with progress events as create has.
async fn fork_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ForkVmRequest>,
) -> Response {
    stream_operation(move |p| async move { d.orch().fork_vm(&name, req.name, &p).await })
}

async fn pause_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<VmRecord> {
    Ok(Json(d.orch().pause_vm(&name).await?))
}

async fn resume_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<VmRecord> {
    Ok(Json(d.orch().resume_vm(&name).await?))
}

#[derive(serde::Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Answer<serde_json::Value> {
    d.orch().delete_vm(&name, q.force).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn set_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetVmRequest>,
) -> Answer<VmRecord> {
    Ok(Json(d.orch().set_vm(&name, req).await?))
}

async fn ssh_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<SshInfo> {
    Ok(Json(d.orch().vm_ssh(&name).await?))
}

async fn agent_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<AgentInfo> {
    Ok(Json(d.orch().vm_agent(&name).await?))
}

async fn stats_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<VmStats> {
    Ok(Json(d.orch().vm_stats(&name).await?))
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

/// The console log as a byte stream (the previous file, then the current
/// one); with `follow`, new output is sent as it is written, across
/// rotations, until the client goes away.
async fn logs_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, Failure> {
    let log = d.orch().console_log(&name).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(8);
    tokio::spawn(stream_console(log, q.follow, tx));
    Ok(
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .into_response(),
    )
}

/// Unpacks a workspace's tar stream (the request's body) for a VM about
/// to be created: `POST /v1/vms` then names it. The body is not held in
/// memory: chunks go to the orchestrator's blocking reader as they come.
async fn stage_workspace(
    State(d): State<Daemon>,
    Query(q): Query<banger_api::StageWorkspaceQuery>,
    body: axum::body::Body,
) -> Answer<banger_api::StagedWorkspace> {
    use tokio_stream::StreamExt;
    // Bounded: the upload goes at the unpacking's pace.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    let mut stream = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                break;
            }
        }
    });
    Ok(Json(
        d.orch()
            .stage_workspace(
                q,
                ChunkReader {
                    rx,
                    chunk: bytes::Bytes::new(),
                },
            )
            .await?,
    ))
}

/// A blocking `Read` over the chunks of a request's body.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            // Called on a blocking thread (the orchestrator's).
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                // The body ended.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Holds an ephemeral VM's lease for as long as the client keeps this
/// request open: a heartbeat line a second, and the VM is deleted when
/// the connection ends.
async fn lease_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Result<Response, Failure> {
    let rx = d.orch().lease_vm(&name).await?;
    Ok(
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .into_response(),
    )
}

async fn list_templates(State(d): State<Daemon>) -> Answer<Vec<TemplateRecord>> {
    Ok(Json(d.orch().list_templates().await?))
}

/// Makes the template, with progress events as an image build has.
async fn warm_template(State(d): State<Daemon>, JsonBody(req): JsonBody<WarmRequest>) -> Response {
    stream_operation(move |p| async move { d.orch().warm_template(req, &p).await })
}

async fn delete_template(
    State(d): State<Daemon>,
    Path(id): Path<String>,
) -> Answer<serde_json::Value> {
    d.orch().delete_template(&id).await?;
    Ok(Json(serde_json::json!({ "deleted": id })))
}

async fn list_images(State(d): State<Daemon>) -> Answer<Vec<ImageRecord>> {
    Ok(Json(d.orch().list_images().await?))
}

async fn show_image(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<ImageRecord> {
    Ok(Json(d.orch().image(&name).await?))
}

async fn build_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<BuildImageRequest>,
) -> Response {
    stream_operation(move |p| async move { d.orch().build_image(req, &p).await })
}

async fn register_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<RegisterImageRequest>,
) -> Response {
    stream_operation(move |p| async move { d.orch().register_image(req, &p).await })
}

async fn pull_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<PullImageRequest>,
) -> Response {
    stream_operation(move |p| async move { d.orch().pull_image(req, &p).await })
}

async fn verify_image(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Answer<Vec<VerifiedFile>> {
    Ok(Json(d.orch().verify_image(&name).await?))
}

async fn delete_image(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Answer<serde_json::Value> {
    d.orch().delete_image(&name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn catalog(State(d): State<Daemon>) -> Answer<Vec<Entry>> {
    Ok(Json(d.orch().catalog()?))
}

async fn delete_kernel(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Answer<serde_json::Value> {
    d.orch().delete_kernel(&name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn list_kernels(State(d): State<Daemon>) -> Answer<Vec<KernelRecord>> {
    Ok(Json(d.orch().list_kernels().await?))
}

async fn show_kernel(State(d): State<Daemon>, Path(name): Path<String>) -> Answer<KernelRecord> {
    Ok(Json(d.orch().kernel(&name).await?))
}

async fn unknown_path(req: Request) -> Failure {
    Failure(Error::not_found(format!(
        "bangerd has no API {} {}: if banger was upgraded, restart the daemon with \
         'banger daemon stop'",
        req.method(),
        req.uri().path()
    )))
}

async fn log_request(req: Request, next: Next) -> impl IntoResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}
