//! The web UI against the real bangerd, with records seeded in its real
//! store (no guest needed): the token and what it guards, read with curl,
//! and the page itself in headless Chromium (the list, a console that
//! shows what a guest printed as text, a screenshot kept as an artifact).
//! A stop through the page's API on a booted VM is in ui_e2e.rs.

mod common;

use common::*;

fn header<'a>(answer: &'a HttpAnswer, name: &str) -> Option<&'a str> {
    answer
        .headers
        .iter()
        .find_map(|h| h.strip_prefix(&format!("{name}: ")))
}

#[test]
fn the_web_ui_is_off_by_default() {
    let home = TestHome::new();
    let out = home.banger(&["web", "url"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("web_listen_addr"),
        "says how to turn it on: {}",
        stderr(&out)
    );
    assert!(!home.state().join("web-token").exists());
}

#[test]
fn the_web_ui_serves_only_its_token_holder() {
    let home = TestHome::new();
    seed(&home);
    // A fixed port (free now), so that the page finds the daemon again
    // after a restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    home.write_config(&format!("web_listen_addr = \"127.0.0.1:{port}\"\n"));
    // What a guest might print: a flood of lines, markup and a
    // terminal's escapes.
    let console = home.state().join("vms/web-1/console.log");
    std::fs::create_dir_all(console.parent().unwrap()).unwrap();
    let mut text: String = (0..20_000).map(|i| format!("flood {i}\n")).collect();
    text.push_str("<img src=x id=injected onerror=alert(1)>\x1b]52;c;aGk=\x07\nconsole-end\n");
    std::fs::write(&console, text).unwrap();

    let link = ok(home.banger(&["web", "url"]).output().unwrap(), "web url");
    let link = link.trim();
    let (base, token) = link.split_once("/?token=").expect("a link with the token");
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");
    assert_eq!(token.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(home.state().join("web-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's alone");

    // No token, a wrong one: 401 and nothing else, for pages and API.
    let url = |path: &str| format!("{base}{path}");
    for path in ["/", "/app.js", "/v1/vms", "/web/events", "/nowhere"] {
        let a = curl(None, &[&url(path)]);
        assert_eq!(a.status, 401, "{path}");
        assert!(a.body.is_empty(), "{path}: {}", a.body);
    }
    let wrong = format!("banger_token={}", "0".repeat(64));
    let a = curl(None, &["-b", &wrong, &url("/v1/vms")]);
    assert_eq!((a.status, a.body.as_str()), (401, ""));
    let a = curl(None, &[&url(&format!("/?token={}", "f".repeat(64)))]);
    assert_eq!(a.status, 401);

    // The link sets the cookie and leaves the token out of the address.
    let a = curl(None, &[link]);
    assert_eq!(a.status, 303);
    assert_eq!(header(&a, "location"), Some("/"));
    let cookie = header(&a, "set-cookie").expect("a cookie");
    assert!(cookie.contains("httponly"), "{cookie}");
    assert!(cookie.contains("samesite=strict"), "{cookie}");
    let jar = format!("banger_token={token}");
    let a = curl(None, &["-b", &jar, &url("/v1/vms")]);
    assert_eq!(a.status, 200);
    assert!(a.body.contains("\"web-1\""), "{}", a.body);
    let a = curl(None, &["-b", &jar, &url("/")]);
    assert_eq!(a.status, 200);
    assert!(
        header(&a, "content-security-policy").is_some_and(|c| c.contains("script-src 'self'")),
        "{:?}",
        a.headers
    );

    // A mutation needs the header: a cookie alone rides along with what
    // other sites make a browser send.
    let delete = url("/v1/vms/web-1?force=true");
    let a = curl(None, &["-X", "DELETE", "-b", &jar, &delete]);
    assert_eq!((a.status, a.body.as_str()), (401, ""));
    // A cross-origin request is refused even with the token.
    let token_header = format!("X-Banger-Token: {token}");
    let a = curl(
        None,
        &[
            "-X",
            "DELETE",
            "-H",
            &token_header,
            "-H",
            "Origin: http://evil.example",
            &delete,
        ],
    );
    assert_eq!(a.status, 403);
    let a = curl(
        None,
        &[
            "-X",
            "DELETE",
            "-H",
            &token_header,
            "-H",
            "Sec-Fetch-Site: cross-site",
            &delete,
        ],
    );
    assert_eq!(a.status, 403);
    let still = curl(None, &["-b", &jar, &url("/v1/vms")]);
    assert!(still.body.contains("\"web-1\""), "nothing was deleted");

    // The page, in a real browser: the list, and the console as text.
    let Some(mut page) = Browser::open(None, link) else {
        return;
    };
    let wait = std::time::Duration::from_secs(20);
    page.wait_for(
        "the VM in the list",
        "document.querySelector('#vms tr[data-name=\"web-1\"] td.name')?.textContent === 'web-1'",
        wait,
    );
    page.wait_for(
        "the live stream",
        "document.getElementById('status').textContent === '● bangerd'",
        wait,
    );
    assert_eq!(
        page.eval("location.href"),
        serde_json::json!(format!("{base}/")),
        "the token left the address bar"
    );
    assert_eq!(
        page.eval("document.cookie"),
        serde_json::json!(""),
        "the cookie is out of the page's reach"
    );

    // The list as a picture, for people reviewing a change.
    let dir = banger_testkit::test_cache().join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("web-ui-list.png");
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "web UI screenshot: {}", shot.display());

    // The console: what the guest printed is shown as text.
    page.eval("document.querySelector('#vms tr[data-name=\"web-1\"] button[data-action=\"logs\"]').click()");
    page.wait_for(
        "the console",
        "document.getElementById('console-text').textContent.includes('console-end')",
        wait,
    );
    // Bounded, and what was dropped is counted.
    let lines =
        page.eval("document.getElementById('console-text').textContent.split('\\n').length");
    assert!(
        lines.as_u64().is_some_and(|n| n <= 5001),
        "{lines} lines kept"
    );
    let note = page.eval("document.getElementById('console-note').textContent");
    assert!(
        note.as_str()
            .is_some_and(|n| n.contains("earlier lines dropped")),
        "{note}"
    );
    let text = page.eval("document.getElementById('console-text').textContent");
    assert!(
        text.as_str().unwrap().contains("<img src=x id=injected"),
        "{text}"
    );
    assert_eq!(
        page.eval("document.getElementById('injected') === null && document.querySelectorAll('#console img').length === 0"),
        serde_json::json!(true),
        "markup a guest printed never becomes an element"
    );

    // A mutation from the page carries the token: deleting through the
    // page's own button (the confirmation answered yes).
    page.eval("window.confirm = () => true; document.querySelector('#vms tr[data-name=\"web-1\"] button[data-action=\"delete\"]').click()");
    page.wait_for(
        "the VM to go",
        "document.querySelector('#vms tr[data-name=\"web-1\"]') === null",
        wait,
    );
    let gone = curl(None, &["-b", &jar, &url("/v1/vms")]);
    assert_eq!(gone.body.trim(), "[]", "deleted through the page");

    // A daemon restart: the page says so, and finds it again.
    ok(
        home.banger(&["daemon", "stop"]).output().unwrap(),
        "daemon stop",
    );
    page.wait_for(
        "the lost daemon",
        "document.getElementById('status').textContent.includes('reconnecting')",
        wait,
    );
    ok(
        home.banger(&["vm", "list"]).output().unwrap(),
        "restart the daemon",
    );
    page.wait_for(
        "the daemon again",
        "document.getElementById('message').textContent === 'reconnected to bangerd'",
        wait,
    );
}
