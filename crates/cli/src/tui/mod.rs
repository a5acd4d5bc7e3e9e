//! `banger tui`: VMs, images and kernels at a glance, and the common
//! actions on them, through the daemon's API only (the client every
//! command uses). `app` holds the state and the keys, `view` draws it,
//! `feed` asks the daemon; this module owns the terminal and the loop.
//!
//! The terminal is restored however the TUI ends: `q`, ctrl-c (a key in
//! raw mode, not a signal), an error (the guard's drop) or a panic (the
//! hook, before the message is printed).

mod app;
mod console;
mod feed;
mod view;

use std::io::{IsTerminal, Stdout};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use banger_api::{Client, VmStarted};
use banger_model::{ImageRecord, VmDefaults};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use ratatui::crossterm::{cursor, execute, terminal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ExitCode;
use crate::path_segment;
use app::{Action, App, Operation};
use feed::Msg;

/// How often keys are looked at and the screen redrawn when something
/// changed.
const TICK: Duration = Duration::from_millis(50);
/// Messages handled between two looks at the keyboard.
const MSG_BUDGET: usize = 512;

pub async fn run(client: &Client) -> Result<ExitCode> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("banger tui needs a terminal: run it in one, or use 'banger vm list'");
    }
    install_panic_hook();
    let _guard = Screen::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("cannot draw on this terminal")?;
    redraw_all(&mut term)?;
    Tui::new(client.clone()).run(&mut term).await?;
    Ok(ExitCode::SUCCESS)
}

/// The alternate screen in raw mode while it lives.
struct Screen;

impl Screen {
    fn enter() -> Result<Self> {
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .context("cannot switch to the alternate screen")?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        leave();
    }
}

/// Back to the screen and modes the user had; harmless twice.
fn leave() {
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
    let _ = terminal::disable_raw_mode();
}

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave();
            previous(info);
        }));
    });
}

struct Tui {
    client: Client,
    app: App,
    tx: feed::Sender,
    rx: mpsc::Receiver<Msg>,
    console: Option<JoinHandle<()>>,
    next_op: u64,
}

impl Tui {
    fn new(client: Client) -> Self {
        let (tx, rx) = mpsc::channel(feed::CHANNEL);
        Self {
            client,
            app: App::new(),
            tx,
            rx,
            console: None,
            next_op: 0,
        }
    }

    async fn run(&mut self, term: &mut Terminal<CrosstermBackend<Stdout>>) -> Result<()> {
        let refresh = feed::refresh(self.client.clone(), self.tx.clone());
        self.app.defaults = self.client.get::<VmDefaults>("/v1/defaults").await.ok();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        term.draw(|f| view::draw(f, &self.app))?;
        let mut dirty = false;
        // Drawn at most once a tick, however fast messages come (a
        // flooding console).
        let result = loop {
            tokio::select! {
                Some(msg) = self.rx.recv() => {
                    self.apply(msg);
                    for _ in 0..MSG_BUDGET {
                        match self.rx.try_recv() {
                            Ok(msg) => self.apply(msg),
                            Err(_) => break,
                        }
                    }
                    dirty = true;
                    continue;
                }
                _ = tick.tick() => {}
            }
            while event::poll(Duration::ZERO)? {
                match event::read()? {
                    TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                        dirty = true;
                        if let Some(action) = self.app.key(key)
                            && let Err(e) = self.act(action, term).await
                        {
                            self.app.fail(format!("{e:#}"));
                        }
                    }
                    TermEvent::Resize(..) => dirty = true,
                    _ => {}
                }
            }
            if self.app.quit {
                break Ok(());
            }
            if dirty {
                term.draw(|f| view::draw(f, &self.app))?;
                dirty = false;
            }
        };
        refresh.abort();
        if let Some(console) = self.console.take() {
            console.abort();
        }
        result
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Snapshot(snap) => self.app.apply_snapshot(snap, Instant::now()),
            Msg::Unreachable(why) => self.app.apply_unreachable(why),
            Msg::Console { vm, bytes } => self.app.apply_console(&vm, &bytes),
            Msg::ConsoleEnd { vm, why } => self.app.apply_console_end(&vm, why),
            Msg::OpEvent { id, event } => {
                if let Some(op) = self.app.operations.iter_mut().find(|o| o.id == id)
                    && let Some(said) = op.apply(&event)
                {
                    self.app.say(said);
                }
            }
            Msg::OpEnd { id, said, failed } => {
                self.app.operations.retain(|o| o.id != id);
                if failed {
                    self.app.fail(said);
                } else {
                    self.app.say(said);
                }
            }
        }
    }

    fn begin(&mut self, title: String) -> u64 {
        self.next_op += 1;
        self.app.say(format!("{title}…"));
        self.app.operations.push(Operation {
            id: self.next_op,
            title,
            phase: String::new(),
            done: 0,
            total: None,
        });
        self.next_op
    }

    async fn act(
        &mut self,
        action: Action,
        term: &mut Terminal<CrosstermBackend<Stdout>>,
    ) -> Result<()> {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        match action {
            Action::Start(name) => {
                let id = self.begin(format!("starting {name}"));
                let path = format!("/v1/vms/{}/start", path_segment(&name));
                feed::stream(client, id, path, serde_json::json!({}), tx, move |v| {
                    started(&name, v, "is running")
                });
            }
            Action::Restart(name) => {
                let id = self.begin(format!("restarting {name}"));
                let path = format!("/v1/vms/{}/restart", path_segment(&name));
                feed::stream(client, id, path, serde_json::json!({}), tx, move |v| {
                    started(&name, v, "restarted")
                });
            }
            Action::Create(req) => {
                let what = req.name.clone().unwrap_or_else(|| "a VM".into());
                let id = self.begin(format!("creating {what}"));
                feed::stream(
                    client,
                    id,
                    "/v1/vms".into(),
                    req,
                    tx,
                    |v| match serde_json::from_value::<VmStarted>(v) {
                        Ok(s) => format!(
                            "VM {} is running at {}",
                            s.vm.name,
                            s.vm.ip.as_deref().unwrap_or("?")
                        ),
                        Err(_) => "VM created".into(),
                    },
                );
            }
            Action::Stop(name) => {
                let id = self.begin(format!("stopping {name}"));
                feed::call(id, tx, async move {
                    let path = format!("/v1/vms/{}/stop", path_segment(&name));
                    client
                        .post::<_, serde_json::Value>(&path, &serde_json::json!({}))
                        .await?;
                    Ok(format!("VM {name} stopped"))
                });
            }
            Action::Delete(name) => {
                if self.app.logs.as_ref().is_some_and(|l| l.vm == name) {
                    self.close_logs();
                }
                let path = format!("/v1/vms/{}?force=true", path_segment(&name));
                self.delete("VM", name, path);
            }
            Action::DeleteImage(name) => {
                let path = format!("/v1/images/{}", path_segment(&name));
                self.delete("image", name, path);
            }
            Action::DeleteKernel(name) => {
                let path = format!("/v1/kernels/{}", path_segment(&name));
                self.delete("kernel", name, path);
            }
            Action::BuildImage => {
                let id = self.begin("building the default image".into());
                feed::stream(
                    client,
                    id,
                    "/v1/images/build".into(),
                    banger_api::BuildImageRequest::default(),
                    tx,
                    image_made,
                );
            }
            Action::PullImage(entry) => {
                let id = self.begin(format!("pulling {entry}"));
                let req = banger_api::PullImageRequest {
                    entry,
                    ..Default::default()
                };
                feed::stream(client, id, "/v1/images/pull".into(), req, tx, image_made);
            }
            Action::Logs(name) => {
                self.close_logs();
                self.app.open_logs(name.clone());
                self.console = Some(feed::console(client, name, tx));
            }
            Action::CloseLogs => self.close_logs(),
            Action::Ssh(name) => {
                // The shell gets the terminal as it was before the TUI,
                // and the TUI takes it back after.
                leave();
                let result = shell(&name).await;
                terminal::enable_raw_mode()?;
                execute!(
                    std::io::stdout(),
                    terminal::EnterAlternateScreen,
                    cursor::Hide
                )?;
                redraw_all(term)?;
                match result {
                    Ok(status) if status.success() => self.app.say(format!("back from VM {name}")),
                    Ok(status) => self.app.say(format!(
                        "back from VM {name} (the session ended with {status})"
                    )),
                    Err(e) => self.app.fail(format!("ssh to {name}: {e:#}")),
                }
            }
        }
        Ok(())
    }

    /// `DELETE path`, said as deleting `what` `name`.
    fn delete(&mut self, what: &'static str, name: String, path: String) {
        let id = self.begin(format!("deleting {what} {name}"));
        let client = self.client.clone();
        feed::call(id, self.tx.clone(), async move {
            client.delete::<serde_json::Value>(&path).await?;
            Ok(format!("deleted {what} {name}"))
        });
    }

    fn close_logs(&mut self) {
        if let Some(task) = self.console.take() {
            task.abort();
        }
        self.app.logs = None;
        self.app.logs_focused = false;
    }
}

/// Clears the screen and forgets what ratatui drew, so the next frame is
/// drawn whole (ratatui's own `clear` asks the terminal where its cursor
/// is, which some terminals never answer).
fn redraw_all(term: &mut Terminal<CrosstermBackend<Stdout>>) -> Result<()> {
    let area = term.size()?;
    term.resize(ratatui::layout::Rect::new(0, 0, area.width, area.height))?;
    Ok(())
}

/// `banger vm ssh NAME`, as a process of its own on this terminal: the
/// same session the command gives (the guest agent, else OpenSSH), and
/// whatever it leaves reading the terminal ends with it, so no stray
/// reader takes the TUI's keys afterwards.
async fn shell(name: &str) -> Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let me = std::env::current_exe().context("cannot find the banger binary")?;
    let mut child = tokio::process::Command::new(me)
        .args(["vm", "ssh", name])
        .spawn()
        .context("cannot start 'banger vm ssh'")?;
    // A ctrl-c on the terminal is the session's, not the TUI's end.
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = int.recv() => {}
        }
    }
}

fn started(name: &str, result: serde_json::Value, what: &str) -> String {
    match serde_json::from_value::<VmStarted>(result) {
        Ok(s) => format!("VM {name} {what} at {}", s.vm.ip.as_deref().unwrap_or("?")),
        Err(_) => format!("VM {name} {what}"),
    }
}

fn image_made(result: serde_json::Value) -> String {
    match serde_json::from_value::<ImageRecord>(result) {
        Ok(i) => format!("image {} is ready", i.name),
        Err(_) => "the image is ready".into(),
    }
}
