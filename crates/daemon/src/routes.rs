//! The `/v1` API: decode, call the store, `images` or `vms`, encode.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use banger_api::{
    BuildImageRequest, CreateVmRequest, DaemonStatus, KillVmRequest, PullImageRequest,
    RegisterImageRequest, SetVmRequest, SshInfo, VerifiedFile, VmStats,
};
use banger_images::catalog::Entry;
use banger_model::{ImageRecord, KernelRecord, VmDefaults, VmRecord};

use crate::error::{Failure, JsonBody};
use crate::images;
use crate::progress::stream_operation;
use crate::server::Daemon;
use crate::vms;

pub fn router(daemon: Daemon) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/defaults", get(defaults))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route(
            "/v1/vms/{name}",
            get(show_vm).delete(delete_vm).patch(set_vm),
        )
        .route("/v1/vms/{name}/start", post(start_vm))
        .route("/v1/vms/{name}/stop", post(stop_vm))
        .route("/v1/vms/{name}/restart", post(restart_vm))
        .route("/v1/vms/{name}/kill", post(kill_vm))
        .route("/v1/vms/{name}/ssh", get(ssh_vm))
        .route("/v1/vms/{name}/stats", get(stats_vm))
        .route("/v1/vms/{name}/logs", get(logs_vm))
        .route("/v1/vms/{name}/lease", post(lease_vm))
        .route("/v1/images", get(list_images))
        .route("/v1/images/build", post(build_image))
        .route("/v1/images/register", post(register_image))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/{name}", get(show_image).delete(delete_image))
        .route("/v1/images/{name}/verify", post(verify_image))
        .route("/v1/catalog", get(catalog))
        .route("/v1/kernels", get(list_kernels))
        .route("/v1/kernels/{name}", get(show_kernel).delete(delete_kernel))
        .fallback(unknown_path)
        .layer(middleware::from_fn(log_request))
        .with_state(daemon)
}

async fn status(State(d): State<Daemon>) -> Result<Json<DaemonStatus>, Failure> {
    let schema_version = d.with_store(|s| s.schema_version()).await?;
    let p = &d.inner.paths;
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
    Json(VmDefaults::resolve(
        &d.inner.config.vm_defaults,
        d.inner.host,
    ))
}

async fn list_vms(State(d): State<Daemon>) -> Result<Json<Vec<VmRecord>>, Failure> {
    Ok(Json(d.with_store(|s| s.list_vms()).await?))
}

async fn show_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<VmRecord>, Failure> {
    let key = name.clone();
    d.with_store(move |s| s.get_vm(&key))
        .await?
        .map(Json)
        .ok_or_else(|| Failure::not_found(format!("VM {name:?} not found: see 'banger vm list'")))
}

async fn create_vm(State(d): State<Daemon>, JsonBody(req): JsonBody<CreateVmRequest>) -> Response {
    stream_operation(move |progress| async move { vms::create(&d, req, &progress).await })
}

async fn start_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Response {
    stream_operation(move |progress| async move { vms::start(&d, &name, &progress).await })
}

async fn restart_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Response {
    stream_operation(move |progress| async move { vms::restart(&d, &name, &progress).await })
}

async fn stop_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<VmRecord>, Failure> {
    Ok(Json(vms::stop(&d, &name).await?))
}

async fn kill_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<KillVmRequest>,
) -> Result<Json<VmRecord>, Failure> {
    let signal =
        vms::parse_signal(req.signal.as_deref().unwrap_or("KILL")).map_err(Failure::bad_request)?;
    Ok(Json(vms::kill(&d, &name, signal).await?))
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
) -> Result<Json<serde_json::Value>, Failure> {
    vms::delete(&d, &name, q.force).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn set_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<SetVmRequest>,
) -> Result<Json<VmRecord>, Failure> {
    Ok(Json(vms::set(&d, &name, req).await?))
}

async fn ssh_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<SshInfo>, Failure> {
    Ok(Json(vms::ssh(&d, &name).await?))
}

async fn stats_vm(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<VmStats>, Failure> {
    Ok(Json(vms::stats(&d, &name).await?))
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
    let log = vms::console_log(&d, &name).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(8);
    tokio::spawn(vms::stream_console(log, q.follow, tx));
    Ok(
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .into_response(),
    )
}

/// Holds an ephemeral VM's lease for as long as the client keeps this
/// request open (`vms::lease`): a heartbeat line a second, and the VM is
/// deleted when the connection ends.
async fn lease_vm(State(d): State<Daemon>, Path(name): Path<String>) -> Result<Response, Failure> {
    let rx = vms::lease(&d, &name).await?;
    Ok(
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .into_response(),
    )
}

async fn list_images(State(d): State<Daemon>) -> Result<Json<Vec<ImageRecord>>, Failure> {
    Ok(Json(d.with_store(|s| s.list_images()).await?))
}

async fn show_image(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<ImageRecord>, Failure> {
    let key = name.clone();
    d.with_store(move |s| s.get_image(&key))
        .await?
        .map(Json)
        .ok_or_else(|| {
            Failure::not_found(format!("image {name:?} not found: see 'banger image list'"))
        })
}

async fn build_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<BuildImageRequest>,
) -> Response {
    stream_operation(move |p| async move { images::build(&d, req, &p).await })
}

async fn register_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<RegisterImageRequest>,
) -> Response {
    stream_operation(move |p| async move { images::register(&d, req, &p).await })
}

async fn pull_image(
    State(d): State<Daemon>,
    JsonBody(req): JsonBody<PullImageRequest>,
) -> Response {
    stream_operation(move |p| async move { images::pull(&d, req, &p).await })
}

async fn verify_image(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VerifiedFile>>, Failure> {
    Ok(Json(images::verify(&d, &name).await?))
}

async fn delete_image(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    images::delete_image(&d, &name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn catalog(State(d): State<Daemon>) -> Result<Json<Vec<Entry>>, Failure> {
    Ok(Json(images::catalog(&d)?.entries().cloned().collect()))
}

async fn delete_kernel(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, Failure> {
    images::delete_kernel(&d, &name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn list_kernels(State(d): State<Daemon>) -> Result<Json<Vec<KernelRecord>>, Failure> {
    Ok(Json(d.with_store(|s| s.list_kernels()).await?))
}

async fn show_kernel(
    State(d): State<Daemon>,
    Path(name): Path<String>,
) -> Result<Json<KernelRecord>, Failure> {
    let key = name.clone();
    d.with_store(move |s| s.get_kernel(&key))
        .await?
        .map(Json)
        .ok_or_else(|| {
            Failure::not_found(format!(
                "kernel {name:?} not found: see 'banger kernel list'"
            ))
        })
}

async fn unknown_path(req: Request) -> Failure {
    Failure::not_found(format!(
        "bangerd has no API {} {}: if banger was upgraded, restart the daemon with \
         'banger daemon stop'",
        req.method(),
        req.uri().path()
    ))
}

async fn log_request(req: Request, next: Next) -> impl IntoResponse {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    resp
}
