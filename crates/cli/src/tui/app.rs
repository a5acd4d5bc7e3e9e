//! The TUI's state and what keys do to it: no terminal, no daemon here,
//! so all of it is tested as plain data. Keys that need the daemon
//! return an [`Action`] that the loop in `mod.rs` carries out.

use std::collections::HashMap;
use std::time::Instant;

use banger_api::{CreateVmRequest, Event, VmStats};
use banger_model::{
    ImageRecord, KernelRecord, Size, TemplateRecord, VmDefaults, VmRecord, VmState,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::console::ConsoleBuffer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Vms,
    Images,
    Kernels,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Vms, Tab::Images, Tab::Kernels];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Vms => "VMs",
            Tab::Images => "Images",
            Tab::Kernels => "Kernels",
        }
    }

    fn index(self) -> usize {
        match self {
            Tab::Vms => 0,
            Tab::Images => 1,
            Tab::Kernels => 2,
        }
    }
}

/// What the loop must do for a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Start(String),
    Stop(String),
    Restart(String),
    Delete(String),
    Ssh(String),
    Logs(String),
    CloseLogs,
    Create(CreateVmRequest),
    BuildImage,
    PullImage(String),
    DeleteImage(String),
    DeleteKernel(String),
}

/// One row of the VM table: the record and what its process costs.
#[derive(Clone, Debug)]
pub struct VmRow {
    pub vm: VmRecord,
    /// Since the previous sample; `None` until there are two.
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
}

/// What one refresh brought: the daemon's lists and each running VM's
/// stats.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub vms: Vec<VmRecord>,
    pub stats: HashMap<String, VmStats>,
    pub images: Vec<ImageRecord>,
    pub kernels: Vec<KernelRecord>,
    /// The templates new VMs resume from (docs/templates.md).
    pub templates: Vec<TemplateRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Before the first answer.
    Connecting,
    Connected,
    /// The last refresh failed; the loop keeps trying.
    Lost(String),
}

/// A long operation in flight, drawn as a progress bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub id: u64,
    pub title: String,
    pub phase: String,
    pub done: u64,
    pub total: Option<u64>,
}

impl Operation {
    /// Folds one event of the operation's stream in; messages are for the
    /// status line, and returned.
    pub fn apply(&mut self, event: &Event) -> Option<String> {
        match event {
            Event::Phase { name, message } => {
                self.phase = name.clone();
                self.done = 0;
                self.total = None;
                Some(message.clone())
            }
            Event::Progress { phase, done, total } => {
                self.phase = phase.clone();
                self.done = *done;
                self.total = *total;
                None
            }
            Event::Info { message } => Some(message.clone()),
            Event::Warning { message } => Some(format!("warning: {message}")),
            Event::Done { .. } | Event::Failed { .. } => None,
        }
    }

    /// Between 0 and 1 when the total is known.
    pub fn ratio(&self) -> Option<f64> {
        self.total
            .filter(|t| *t > 0)
            .map(|t| (self.done as f64 / t as f64).clamp(0.0, 1.0))
    }
}

pub struct LogsPane {
    pub vm: String,
    pub buffer: ConsoleBuffer,
    /// Lines scrolled up from the end; 0 follows new output.
    pub scroll: usize,
    /// Why the stream ended, once it has.
    pub ended: Option<String>,
}

/// A text field of a form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub label: &'static str,
    pub value: String,
    pub hint: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modal {
    /// `y` carries the action out, anything else drops it.
    Confirm {
        prompt: String,
        action: Box<ActionBox>,
    },
    /// Enter submits, Esc cancels, Tab and arrows move.
    Form {
        kind: FormKind,
        fields: Vec<Field>,
        focus: usize,
        error: Option<String>,
    },
}

/// An [`Action`] inside a [`Modal`] (which compares as plain data).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionBox(pub Action);
impl Eq for ActionBox {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormKind {
    Create,
    Pull,
}

pub struct App {
    pub tab: Tab,
    pub vms: Vec<VmRow>,
    pub images: Vec<ImageRecord>,
    pub kernels: Vec<KernelRecord>,
    pub templates: Vec<TemplateRecord>,
    selected: [usize; 3],
    /// The previous CPU sample of each VM's process, by pid.
    cpu_samples: HashMap<u32, (f64, Instant)>,
    pub connection: Connection,
    /// The last thing worth saying, and whether it is an error.
    pub message: Option<(String, bool)>,
    pub modal: Option<Modal>,
    pub logs: Option<LogsPane>,
    /// Whether arrow keys scroll the logs pane rather than the table.
    pub logs_focused: bool,
    pub operations: Vec<Operation>,
    pub defaults: Option<VmDefaults>,
    pub quit: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> Self {
        Self {
            tab: Tab::Vms,
            vms: Vec::new(),
            images: Vec::new(),
            templates: Vec::new(),
            kernels: Vec::new(),
            selected: [0; 3],
            cpu_samples: HashMap::new(),
            connection: Connection::Connecting,
            message: None,
            modal: None,
            logs: None,
            logs_focused: false,
            operations: Vec::new(),
            defaults: None,
            quit: false,
        }
    }

    pub fn say(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), false));
    }

    pub fn fail(&mut self, text: impl Into<String>) {
        self.message = Some((text.into(), true));
    }

    pub fn selected(&self) -> usize {
        self.selected[self.tab.index()]
    }

    fn rows(&self) -> usize {
        match self.tab {
            Tab::Vms => self.vms.len(),
            Tab::Images => self.images.len(),
            Tab::Kernels => self.kernels.len(),
        }
    }

    fn move_selection(&mut self, by: isize) {
        let rows = self.rows();
        let i = &mut self.selected[self.tab.index()];
        *i = i.saturating_add_signed(by).min(rows.saturating_sub(1));
    }

    pub fn selected_vm(&self) -> Option<&VmRecord> {
        self.vms.get(self.selected[0]).map(|r| &r.vm)
    }

    /// A refresh arrived: the VMs, images and kernels as they are now. A
    /// VM deleted elsewhere just goes; the selection stays on the same
    /// name where it can.
    pub fn apply_snapshot(&mut self, snap: Snapshot, at: Instant) {
        if self.connection != Connection::Connected {
            if matches!(self.connection, Connection::Lost(_)) {
                self.say("reconnected to bangerd");
            }
            self.connection = Connection::Connected;
        }
        let keep = self.selected_vm().map(|v| v.name.to_string());
        let mut samples = HashMap::new();
        self.vms = snap
            .vms
            .into_iter()
            .map(|vm| {
                let stats = snap.stats.get(vm.name.as_str());
                let mut cpu_percent = None;
                if let Some((pid, cpu)) = stats.and_then(|s| Some((s.pid?, s.cpu_secs?))) {
                    if let Some((before, then)) = self.cpu_samples.get(&pid) {
                        let secs = at.duration_since(*then).as_secs_f64();
                        if secs > 0.0 {
                            cpu_percent = Some(((cpu - before) / secs * 100.0).max(0.0));
                        }
                    }
                    samples.insert(pid, (cpu, at));
                }
                VmRow {
                    cpu_percent,
                    rss_bytes: stats.and_then(|s| s.rss_bytes),
                    uptime_secs: stats.and_then(|s| s.uptime_secs),
                    vm,
                }
            })
            .collect();
        self.cpu_samples = samples;
        self.images = snap.images;
        self.templates = snap.templates;
        self.kernels = snap.kernels;
        if let Some(name) = keep
            && let Some(i) = self.vms.iter().position(|r| r.vm.name.as_str() == name)
        {
            self.selected[0] = i;
        }
        for tab in Tab::ALL {
            let rows = match tab {
                Tab::Vms => self.vms.len(),
                Tab::Images => self.images.len(),
                Tab::Kernels => self.kernels.len(),
            };
            let i = &mut self.selected[tab.index()];
            *i = (*i).min(rows.saturating_sub(1));
        }
    }

    pub fn apply_unreachable(&mut self, why: String) {
        self.connection = Connection::Lost(why);
    }

    /// A key, pressed. Returns what the daemon must be asked, if anything.
    pub fn key(&mut self, key: KeyEvent) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
            self.quit = true;
            return None;
        }
        if self.modal.is_some() {
            return self.modal_key(key);
        }
        match key.code {
            KeyCode::Char('q') => {
                self.quit = true;
                None
            }
            KeyCode::Esc if self.logs.is_some() => {
                self.logs_focused = false;
                Some(Action::CloseLogs)
            }
            KeyCode::Tab | KeyCode::Right if !self.logs_focused => {
                let i = (self.tab.index() + 1) % Tab::ALL.len();
                self.tab = Tab::ALL[i];
                None
            }
            KeyCode::BackTab | KeyCode::Left if !self.logs_focused => {
                let i = (self.tab.index() + Tab::ALL.len() - 1) % Tab::ALL.len();
                self.tab = Tab::ALL[i];
                None
            }
            KeyCode::Char(c @ '1'..='3') => {
                self.tab = Tab::ALL[usize::from(c as u8 - b'1')];
                None
            }
            KeyCode::Char('f') if self.logs.is_some() => {
                self.logs_focused = !self.logs_focused;
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.scroll_or_move(-1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.scroll_or_move(1);
                None
            }
            KeyCode::PageUp => {
                self.scroll_logs(-20);
                None
            }
            KeyCode::PageDown => {
                self.scroll_logs(20);
                None
            }
            KeyCode::End | KeyCode::Char('G') => {
                if let Some(logs) = &mut self.logs {
                    logs.scroll = 0;
                }
                None
            }
            _ => match self.tab {
                Tab::Vms => self.vm_key(key.code),
                Tab::Images => self.image_key(key.code),
                Tab::Kernels => self.kernel_key(key.code),
            },
        }
    }

    fn scroll_or_move(&mut self, by: isize) {
        if self.logs_focused {
            self.scroll_logs(by);
        } else {
            self.move_selection(by);
        }
    }

    /// Negative scrolls up (older lines).
    fn scroll_logs(&mut self, by: isize) {
        if let Some(logs) = &mut self.logs {
            let max = logs.buffer.len().saturating_sub(1);
            logs.scroll = logs.scroll.saturating_add_signed(-by).min(max);
        }
    }

    fn vm_key(&mut self, code: KeyCode) -> Option<Action> {
        if code == KeyCode::Char('c') {
            self.modal = Some(self.create_form());
            return None;
        }
        let name = self.selected_vm()?.name.to_string();
        match code {
            KeyCode::Char('s') => Some(Action::Start(name)),
            KeyCode::Char('x') => Some(Action::Stop(name)),
            KeyCode::Char('r') => Some(Action::Restart(name)),
            KeyCode::Char('d') => {
                self.modal = Some(Modal::Confirm {
                    prompt: format!(
                        "Delete VM {name}? Its disks, and what is on them, are lost. (y/n)"
                    ),
                    action: Box::new(ActionBox(Action::Delete(name))),
                });
                None
            }
            KeyCode::Char('l') => Some(Action::Logs(name)),
            KeyCode::Enter | KeyCode::Char('e') => Some(Action::Ssh(name)),
            _ => None,
        }
    }

    fn image_key(&mut self, code: KeyCode) -> Option<Action> {
        match code {
            KeyCode::Char('b') => Some(Action::BuildImage),
            KeyCode::Char('p') => {
                self.modal = Some(Modal::Form {
                    kind: FormKind::Pull,
                    fields: vec![Field {
                        label: "entry",
                        value: String::new(),
                        hint: "a catalog entry or an OCI reference",
                    }],
                    focus: 0,
                    error: None,
                });
                None
            }
            KeyCode::Char('d') => {
                let name = self.images.get(self.selected[1])?.name.clone();
                self.modal = Some(Modal::Confirm {
                    prompt: format!("Delete image {name}? (y/n)"),
                    action: Box::new(ActionBox(Action::DeleteImage(name))),
                });
                None
            }
            _ => None,
        }
    }

    fn kernel_key(&mut self, code: KeyCode) -> Option<Action> {
        if code != KeyCode::Char('d') {
            return None;
        }
        let name = self.kernels.get(self.selected[2])?.name.clone();
        self.modal = Some(Modal::Confirm {
            prompt: format!("Delete kernel {name}? (y/n)"),
            action: Box::new(ActionBox(Action::DeleteKernel(name))),
        });
        None
    }

    /// The create form, prefilled with the daemon's resolved defaults.
    fn create_form(&self) -> Modal {
        let d = self.defaults.as_ref();
        let field = |label, value: Option<String>, hint| Field {
            label,
            value: value.unwrap_or_default(),
            hint,
        };
        Modal::Form {
            kind: FormKind::Create,
            fields: vec![
                field("name", None, "empty: a generated name"),
                field("image", None, "empty: the default image"),
                field("vcpu", d.map(|d| d.vcpu.value.to_string()), ""),
                field("memory MiB", d.map(|d| d.memory_mib.value.to_string()), ""),
                field("disk", d.map(|d| d.disk_size.value.to_string()), "like 8G"),
                field("nat", Some("no".into()), "yes or no"),
            ],
            focus: 0,
            error: None,
        }
    }

    fn modal_key(&mut self, key: KeyEvent) -> Option<Action> {
        let modal = self.modal.take()?;
        match modal {
            Modal::Confirm { action, .. } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => Some(action.0),
                _ => {
                    self.say("cancelled");
                    None
                }
            },
            Modal::Form {
                kind,
                mut fields,
                mut focus,
                error,
            } => {
                match key.code {
                    KeyCode::Esc => return None,
                    KeyCode::Enter => match submit(kind, &fields) {
                        Ok(action) => return Some(action),
                        Err(e) => {
                            self.modal = Some(Modal::Form {
                                kind,
                                fields,
                                focus,
                                error: Some(e),
                            });
                            return None;
                        }
                    },
                    KeyCode::Tab | KeyCode::Down => focus = (focus + 1) % fields.len(),
                    KeyCode::BackTab | KeyCode::Up => {
                        focus = (focus + fields.len() - 1) % fields.len()
                    }
                    KeyCode::Backspace => {
                        fields[focus].value.pop();
                    }
                    KeyCode::Char(c) if !c.is_control() && fields[focus].value.len() < 256 => {
                        fields[focus].value.push(c)
                    }
                    _ => {}
                }
                self.modal = Some(Modal::Form {
                    kind,
                    fields,
                    focus,
                    error,
                });
                None
            }
        }
    }

    pub fn apply_console(&mut self, vm: &str, bytes: &[u8]) {
        if let Some(logs) = self.logs.as_mut().filter(|l| l.vm == vm) {
            let before = logs.buffer.len();
            logs.buffer.push(bytes);
            // Scrolled up: the same lines stay in view.
            if logs.scroll > 0 {
                logs.scroll += logs.buffer.len().saturating_sub(before);
            }
        }
    }

    pub fn apply_console_end(&mut self, vm: &str, why: String) {
        if let Some(logs) = self.logs.as_mut().filter(|l| l.vm == vm) {
            logs.ended = Some(why);
        }
    }

    pub fn open_logs(&mut self, vm: String) {
        self.logs = Some(LogsPane {
            vm,
            buffer: ConsoleBuffer::default(),
            scroll: 0,
            ended: None,
        });
        self.logs_focused = true;
    }
}

/// A form's fields as the action they ask for, or what is wrong with them.
fn submit(kind: FormKind, fields: &[Field]) -> Result<Action, String> {
    let value = |label: &str| {
        fields
            .iter()
            .find(|f| f.label == label)
            .map(|f| f.value.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match kind {
        FormKind::Pull => value("entry")
            .map(Action::PullImage)
            .ok_or_else(|| "give a catalog entry or an OCI reference".into()),
        FormKind::Create => {
            if let Some(name) = value("name") {
                banger_model::VmName::parse(&name).map_err(|e| e.to_string())?;
            }
            let number = |label: &str| -> Result<Option<u64>, String> {
                value(label)
                    .map(|v| {
                        v.parse::<u64>()
                            .map_err(|_| format!("{label} {v:?} is not a whole number"))
                    })
                    .transpose()
            };
            let vcpu = number("vcpu")?
                .map(|v| u32::try_from(v).map_err(|_| format!("vcpu {v} is too large")))
                .transpose()?;
            let disk_size = value("disk")
                .map(|v| Size::parse(&v).map_err(|e| e.to_string()))
                .transpose()?;
            let nat = match value("nat").as_deref() {
                None | Some("no" | "n" | "false") => false,
                Some("yes" | "y" | "true") => true,
                Some(other) => return Err(format!("nat {other:?}: answer yes or no")),
            };
            Ok(Action::Create(CreateVmRequest {
                name: value("name"),
                image: value("image"),
                vcpu,
                memory_mib: number("memory MiB")?,
                disk_size,
                nat,
                start: true,
                remove_on_failure: false,
                ephemeral: false,
                wait: None,
                cold: false,
                workspace: None,
            }))
        }
    }
}

/// An image's ready templates: how many, and what they take on disk.
pub fn templates_of(templates: &[TemplateRecord], image: &str) -> (usize, u64) {
    templates
        .iter()
        .filter(|t| t.image == image && t.state == banger_model::ObjectState::Ready)
        .fold((0, 0), |(n, bytes), t| (n + 1, bytes + t.bytes))
}

/// `running`, marked when the VM goes with its `vm run --rm`.
pub fn state_label(vm: &VmRecord) -> String {
    match (vm.state, vm.ephemeral) {
        (s, true) => format!("{s}·rm"),
        (VmState::Running, false) => "running".into(),
        (s, false) => s.to_string(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventKind;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new_with_kind(code, KeyModifiers::NONE, KeyEventKind::Press)
    }

    pub(in crate::tui) fn vm(name: &str, state: VmState) -> VmRecord {
        VmRecord {
            name: banger_model::VmName::parse(name).unwrap(),
            image: "debian-bookworm".into(),
            kernel: "k".into(),
            state,
            vcpu: 2,
            memory_mib: 1024,
            disk_size: Size::from_gib(8),
            nat: false,
            ip: Some("172.16.0.2".into()),
            mac: String::new(),
            tap: String::new(),
            system_uuid: String::new(),
            work_uuid: String::new(),
            runtime: None,
            last_error: None,
            created_at: 0,
            ephemeral: false,
            boot_path: None,
            template_build: None,
            workspace: None,
        }
    }

    fn stats(name: &str, pid: u32, cpu: f64) -> VmStats {
        VmStats {
            name: name.into(),
            state: VmState::Running,
            pid: Some(pid),
            cpu_secs: Some(cpu),
            rss_bytes: Some(100 << 20),
            uptime_secs: Some(61),
            disks: vec![],
        }
    }

    fn snapshot(vms: &[&str], cpu: f64) -> Snapshot {
        Snapshot {
            vms: vms.iter().map(|n| vm(n, VmState::Running)).collect(),
            stats: vms
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), stats(n, 100 + i as u32, cpu)))
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn an_images_ready_templates_are_counted_with_their_size() {
        let t = |id: &str, image: &str, state, bytes| TemplateRecord {
            id: id.into(),
            image: image.into(),
            kernel: "k".into(),
            vcpu: 2,
            memory_mib: 2048,
            backend: "qemu".into(),
            key: String::new(),
            state,
            system_uuid: String::new(),
            work_uuid: String::new(),
            mac: String::new(),
            work_bytes: 0,
            files: vec![],
            bytes,
            created_at: 0,
        };
        use banger_model::ObjectState::{Building, Ready};
        let all = [
            t("a", "deb", Ready, 100),
            t("b", "deb", Ready, 50),
            t("c", "deb", Building, 7),
            t("d", "other", Ready, 1),
        ];
        assert_eq!(templates_of(&all, "deb"), (2, 150));
        assert_eq!(templates_of(&all, "none"), (0, 0));
    }

    #[test]
    fn cpu_percent_comes_from_two_samples() {
        let mut app = App::new();
        let t0 = Instant::now();
        app.apply_snapshot(snapshot(&["a"], 10.0), t0);
        assert_eq!(app.vms[0].cpu_percent, None);
        app.apply_snapshot(
            snapshot(&["a"], 10.5),
            t0 + std::time::Duration::from_secs(1),
        );
        let pct = app.vms[0].cpu_percent.unwrap();
        assert!((pct - 50.0).abs() < 0.01, "{pct}");
        assert_eq!(app.vms[0].uptime_secs, Some(61));
    }

    #[test]
    fn a_vm_deleted_elsewhere_goes_and_the_selection_follows_names() {
        let mut app = App::new();
        let t0 = Instant::now();
        app.apply_snapshot(snapshot(&["a", "b", "c"], 1.0), t0);
        app.key(press(KeyCode::Down));
        app.key(press(KeyCode::Down));
        assert_eq!(app.selected_vm().unwrap().name.as_str(), "c");
        app.apply_snapshot(snapshot(&["a", "c"], 1.0), t0);
        assert_eq!(app.selected_vm().unwrap().name.as_str(), "c");
        app.apply_snapshot(snapshot(&["a"], 1.0), t0);
        assert_eq!(app.selected_vm().unwrap().name.as_str(), "a");
        app.apply_snapshot(snapshot(&[], 1.0), t0);
        assert!(app.selected_vm().is_none());
        assert_eq!(app.key(press(KeyCode::Char('x'))), None);
        assert_eq!(app.message, None, "no error for a VM that went");
    }

    #[test]
    fn delete_asks_first_stop_does_not() {
        let mut app = App::new();
        app.apply_snapshot(snapshot(&["a"], 1.0), Instant::now());
        assert_eq!(
            app.key(press(KeyCode::Char('x'))),
            Some(Action::Stop("a".into()))
        );
        assert_eq!(app.key(press(KeyCode::Char('d'))), None);
        assert!(matches!(app.modal, Some(Modal::Confirm { .. })));
        assert_eq!(app.key(press(KeyCode::Char('n'))), None);
        assert!(app.modal.is_none());
        app.key(press(KeyCode::Char('d')));
        assert_eq!(
            app.key(press(KeyCode::Char('y'))),
            Some(Action::Delete("a".into()))
        );
    }

    #[test]
    fn q_and_ctrl_c_quit_even_in_a_form() {
        let mut app = App::new();
        app.key(press(KeyCode::Char('q')));
        assert!(app.quit);
        let mut app = App::new();
        app.key(press(KeyCode::Char('c')));
        assert!(matches!(app.modal, Some(Modal::Form { .. })));
        app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(app.quit);
    }

    #[test]
    fn the_create_form_is_prefilled_and_checked() {
        let mut app = App::new();
        app.defaults = Some(banger_model::VmDefaults::resolve(
            &banger_model::DefaultsOverride::default(),
            banger_model::HostFacts::default(),
        ));
        app.key(press(KeyCode::Char('c')));
        let Some(Modal::Form { fields, .. }) = &app.modal else {
            panic!("no form")
        };
        assert!(!fields[2].value.is_empty(), "vcpu prefilled: {fields:?}");
        for c in "Bad_Name".chars() {
            app.key(press(KeyCode::Char(c)));
        }
        assert_eq!(app.key(press(KeyCode::Enter)), None);
        let Some(Modal::Form { error, .. }) = &app.modal else {
            panic!("the form stays")
        };
        assert!(error.is_some());
        for _ in 0.."Bad_Name".len() {
            app.key(press(KeyCode::Backspace));
        }
        for c in "web-2".chars() {
            app.key(press(KeyCode::Char(c)));
        }
        match app.key(press(KeyCode::Enter)) {
            Some(Action::Create(req)) => {
                assert_eq!(req.name.as_deref(), Some("web-2"));
                assert!(req.vcpu.is_some() && req.start && !req.nat);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn progress_follows_the_event_stream() {
        let mut op = Operation {
            id: 1,
            title: "create".into(),
            phase: String::new(),
            done: 0,
            total: None,
        };
        let said = op.apply(&Event::Phase {
            name: "boot".into(),
            message: "booting".into(),
        });
        assert_eq!(said.as_deref(), Some("booting"));
        op.apply(&Event::Progress {
            phase: "boot".into(),
            done: 1,
            total: Some(4),
        });
        assert_eq!(op.ratio(), Some(0.25));
    }

    #[test]
    fn logs_scroll_and_follow() {
        let mut app = App::new();
        app.open_logs("a".into());
        for i in 0..50 {
            app.apply_console("a", format!("{i}\n").as_bytes());
        }
        app.apply_console("other", b"x\n");
        app.key(press(KeyCode::PageUp));
        assert_eq!(app.logs.as_ref().unwrap().scroll, 20);
        app.apply_console("a", b"more\n");
        assert_eq!(app.logs.as_ref().unwrap().scroll, 21, "the view stays put");
        app.key(press(KeyCode::End));
        assert_eq!(app.logs.as_ref().unwrap().scroll, 0);
        assert_eq!(app.key(press(KeyCode::Esc)), Some(Action::CloseLogs));
    }
}
