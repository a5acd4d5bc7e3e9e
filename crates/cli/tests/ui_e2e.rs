//! `banger tui` and the web UI against a real daemon with one booted VM,
//! under QEMU/TCG with `bangerd` in a network namespace of the test's own
//! (as vm_e2e.rs). The web page stops the VM with its own button; the TUI,
//! typed into in tmux at 80x24, shows it with its address, starts it
//! again with a progress bar, follows its console (through a flood),
//! steps aside for a shell in it, stops it, reconnects across a daemon
//! restart, and leaves the terminal as it found it on `q`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use banger_model::VmState;
use common::*;

const VM: &str = "glance";

#[test]
fn the_tui_and_the_web_ui_see_and_steer_a_vm() {
    let Some(home) = home_with_default_image(&["tmux", "chromium", "stty"], |home| {
        home.write_config("hypervisor = \"qemu\"\nweb_listen_addr = \"127.0.0.1:0\"\n");
    }) else {
        return;
    };
    let Some(ns) = Netns::new("banger-ui") else {
        return;
    };
    let b = |args: &[&str]| home.banger_in(&ns, args, &[]);
    // A small work disk: the space check counts disks at full size. The
    // agent, not sshd, is waited for: what the test uses.
    ok(
        b(&[
            "vm",
            "create",
            "--name",
            VM,
            "--disk-size",
            "1G",
            "--wait",
            "sysinit",
        ]),
        "vm create",
    );
    let state = || {
        vm_list(&home, &ns)
            .into_iter()
            .find(|v| v.name.as_str() == VM)
            .map(|v| v.state)
    };

    // The web page's stop button.
    let link = ok(b(&["web", "url"]), "web url");
    let Some(mut page) = Browser::open(Some(&ns), link.trim()) else {
        return;
    };
    let row = format!("#vms tr[data-name=\"{VM}\"]");
    page.wait_for(
        "the VM running in the list",
        &format!("document.querySelector('{row}')?.className === 'running'"),
        Duration::from_secs(20),
    );
    page.eval(&format!(
        "document.querySelector('{row} button[data-action=\"stop\"]').click()"
    ));
    page.wait_for(
        "the VM stopped in the list",
        &format!("document.querySelector('{row}')?.className === 'stopped'"),
        Duration::from_secs(120),
    );
    drop(page);
    assert_eq!(state(), Some(VmState::Stopped), "stopped by the page");
    let ip = vm_list(&home, &ns)[0].ip.clone().expect("a leased address");

    // The TUI, in a real terminal.
    let tui = Tmux::new(&home, &ns);
    tui.type_line(&tui.banger_line(&["tui"]));
    tui.wait_screen("the table", |s| s.contains(VM) && s.contains(&ip), 30);
    tui.wait_screen("the VM stopped", |s| row_of(s, VM).contains("stopped"), 10);

    // s starts it, with a bar while it boots.
    tui.keys(&["s"]);
    let mut saw_progress = false;
    tui.wait_screen(
        "the VM running",
        |s| {
            saw_progress |= s.contains(&format!("starting {VM}"));
            row_of(s, VM).contains("running")
        },
        300,
    );
    assert!(saw_progress, "a progress line while it started");
    // Its uptime, from the stats (the last column: `12s`, `1m`).
    tui.wait_screen(
        "its stats",
        |s| {
            row_of(s, VM).split_whitespace().last().is_some_and(|up| {
                up.starts_with(|c: char| c.is_ascii_digit())
                    && up.ends_with(|c: char| c.is_ascii_alphabetic())
            })
        },
        10,
    );

    // l follows its console.
    tui.keys(&["l"]);
    tui.wait_screen(
        "the logs pane",
        |s| s.contains(&format!("console of {VM}")),
        10,
    );
    ok(
        b(&[
            "vm",
            "ssh",
            VM,
            "--",
            "sh",
            "-c",
            "echo tui-console-$((6*7)) > /dev/ttyS0",
        ]),
        "write to the console",
    );
    tui.wait_screen("the guest's line", |s| s.contains("tui-console-42"), 30);
    // A flood: the pane keeps its last lines and counts the others, and
    // the keys still answer.
    ok(
        b(&[
            "vm",
            "ssh",
            VM,
            "--",
            "sh",
            "-c",
            "awk 'BEGIN { for (i = 1; i <= 20000; i++) printf \"flood %d\\n\", i }' > /dev/ttyS0",
        ]),
        "flood the console",
    );
    tui.wait_screen(
        "the flood's end, and the dropped lines counted",
        |s| s.contains("flood 20000") && s.contains("earlier lines dropped"),
        60,
    );
    tui.keys(&["2"]);
    tui.wait_screen("the images view", |s| s.contains("KERNEL"), 10);
    tui.keys(&["1"]);
    tui.wait_screen("the VMs view", |s| s.contains("CPU%"), 10);
    tui.keys(&["Escape"]);
    tui.wait_screen("the pane closed", |s| !s.contains("console of"), 10);

    // Enter: a shell in the VM, then back.
    tui.keys(&["Enter"]);
    tui.wait_screen("the shell", |_| !tui.alternate_screen(), 60);
    std::thread::sleep(Duration::from_secs(2));
    tui.type_line("echo inside-$((6*7))");
    tui.wait_screen("the guest's answer", |s| s.contains("inside-42"), 60);
    tui.type_line("exit");
    tui.wait_screen(
        "the TUI back",
        |s| tui.alternate_screen() && s.contains(&format!("back from VM {VM}")),
        30,
    );

    // x stops it.
    tui.keys(&["x"]);
    tui.wait_screen("the VM stopped", |s| row_of(s, VM).contains("stopped"), 120);
    assert_eq!(state(), Some(VmState::Stopped), "stopped by the TUI");

    // A daemon restart: said, then reconnected.
    ok(b(&["daemon", "stop"]), "daemon stop");
    tui.wait_screen("the lost daemon", |s| s.contains("reconnecting"), 15);
    ok(b(&["vm", "list"]), "start the daemon again");
    tui.wait_screen("reconnected", |s| s.contains("reconnected to bangerd"), 15);

    // q: the terminal as it was (the main screen, canonical mode, echo).
    tui.keys(&["q"]);
    tui.wait_screen("the shell again", |_| !tui.alternate_screen(), 10);
    let stty = home.root().join("stty.txt");
    tui.type_line(&format!("stty -a > {}", stty.display()));
    wait_for("stty's output", Duration::from_secs(10), || {
        std::fs::read_to_string(&stty).is_ok_and(|s| s.contains("speed"))
    });
    let modes = std::fs::read_to_string(&stty).unwrap();
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(words.contains(&mode), "{mode} restored: {modes}");
    }

    ok(b(&["vm", "delete", "--force", VM]), "vm delete");
    let _ = b(&["daemon", "stop"]);
}

/// The screen line that shows `vm`, or "".
fn row_of(screen: &str, vm: &str) -> String {
    screen
        .lines()
        .find(|l| l.trim_start_matches("> ").trim_start().starts_with(vm))
        .unwrap_or("")
        .to_string()
}

/// A tmux server of the test's own, with one 80x24 shell.
struct Tmux {
    socket: String,
    ns: String,
    env: Vec<String>,
}

impl Tmux {
    fn new(home: &TestHome, ns: &Netns) -> Self {
        let t = Tmux {
            socket: format!("banger-ui-{}", std::process::id()),
            ns: ns.0.clone(),
            env: home
                .banger_in_command(ns, &[])
                .get_envs()
                .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
                .collect(),
        };
        t.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "env",
            "-i",
            "TERM=xterm-256color",
            "PS1=$ ",
            "bash",
            "--norc",
            "--noprofile",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// `banger ARGS` in the namespace with the home's environment, as a
    /// shell line.
    fn banger_line(&self, args: &[&str]) -> String {
        let mut line: Vec<String> = ["ip", "netns", "exec", &self.ns, "env"]
            .into_iter()
            .map(String::from)
            .collect();
        line.extend(self.env.iter().cloned());
        line.push(TestHome::banger_bin().display().to_string());
        line.extend(args.iter().map(|a| a.to_string()));
        shlex::try_join(line.iter().map(String::as_str)).expect("a shell line")
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-l", line]);
        self.run(&["send-keys", "Enter"]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    fn alternate_screen(&self) -> bool {
        self.run(&["display-message", "-p", "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn wait_screen(&self, what: &str, mut cond: impl FnMut(&str) -> bool, secs: u64) {
        let started = Instant::now();
        loop {
            let s = self.screen();
            if cond(&s) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "{what} never showed; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
