//! The UI against hostile clients (issue 17), over real sockets: a foreign `Host` (DNS rebinding),
//! half-sent requests, too many connections, large bodies, forged and expired sessions, guessed
//! passwords, cross-origin forms, and HTTPS. The store is an empty SQLite one: these are about the
//! HTTP side, not the pages.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

use super::*;

const TOKEN: &str = "s3cret";

/// A UI on an empty store, served with `config` on a loopback port.
async fn serve_config(config: UiConfig) -> (Served, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path()).expect("a new store");
    let ui_store = AnyStore::Sqlite(store).reader().await.expect("the store opens read-only");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(listener, ui_store, config, async move {
        let _ = stopped.await;
    }));
    (Served { addr, _stop: stop }, dir)
}

fn token_config() -> UiConfig {
    UiConfig::new(Access::Token(TOKEN.into()))
}

/// A connection to `addr` from the loopback address `from` (127.0.0.0/8 is all loopback on Linux: each
/// test client can be an address of its own).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).expect("bound to a loopback address");
    socket.connect(addr).await.expect("the UI accepts")
}

/// One request from `from`; the whole answer (the connection closes at its end: HTTP/1.0).
async fn request_from(from: [u8; 4], addr: SocketAddr, text: &str) -> Answer {
    let mut tcp = connect_from(from, addr).await;
    tcp.write_all(text.as_bytes()).await.expect("the request is sent");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut raw))
        .await
        .expect("the UI answers in time")
        .expect("the answer is read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

fn get_with_host(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{extra}\r\n")
}

fn post(path: &str, host: impl std::fmt::Display, extra: &str, form: &str) -> String {
    format!(
        "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n{extra}\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )
}

/// The `Set-Cookie` header of an answer, whole.
fn set_cookie(answer: &Answer) -> String {
    answer
        .head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no Set-Cookie in:\n{}", answer.head))
}

/// `name=value` of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().expect("a pair").to_owned()
}

async fn log_in(from: [u8; 4], addr: SocketAddr) -> Answer {
    request_from(from, addr, &post("/login", addr, "", &format!("token={TOKEN}"))).await
}

#[tokio::test]
async fn a_foreign_host_gets_421() {
    let config = UiConfig {
        hosts: vec!["crash.example.com".into(), "ui.example.com:8443".into()],
        ..UiConfig::new(Access::Open)
    };
    let (ui, _dir) = serve_config(config).await;
    let port = ui.addr.port();
    let status = |host: String| async move {
        request_from([127, 0, 0, 1], ui.addr, &get_with_host("/", &host, "")).await.status
    };
    // A page of attacker.example whose name now resolves to 127.0.0.1 asks with its own name.
    assert_eq!(status(format!("attacker.example:{port}")).await, 421);
    assert_eq!(status("attacker.example".into()).await, 421);
    assert_eq!(status(format!("localhost.attacker.example:{port}")).await, 421);
    assert_eq!(status(format!("ui.example.com:{port}")).await, 421, "that name only with its port");
    // The loopback names and IP literals with the bound port; the names given, as given.
    assert_eq!(status(format!("localhost:{port}")).await, 200);
    assert_eq!(status(format!("127.0.0.1:{port}")).await, 200);
    assert_eq!(status(format!("[::1]:{port}")).await, 200);
    assert_eq!(status(format!("localhost:{}", port.wrapping_add(1))).await, 421, "another port");
    assert_eq!(status("crash.example.com".into()).await, 200);
    assert_eq!(status(format!("Crash.Example.COM:{port}")).await, 200);
    assert_eq!(status("ui.example.com:8443".into()).await, 200);
    // No Host at all (HTTP/1.0 allows it): not for this server either.
    let bare = request_from([127, 0, 0, 1], ui.addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(bare.status, 421);
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let limits = UiLimits { header_timeout: Duration::from_secs(1), ..UiLimits::default() };
    let (ui, _dir) = serve_config(UiConfig { limits, ..UiConfig::new(Access::Open) }).await;
    let started = Instant::now();
    // One socket that says nothing, one that sends a head one byte at a time and never ends it.
    let mut silent = connect_from([127, 0, 0, 2], ui.addr).await;
    let mut trickle = connect_from([127, 0, 0, 2], ui.addr).await;
    let trickling = async {
        let mut buf = [0u8; 64];
        for b in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            if trickle.write_all(&[*b]).await.is_err() {
                return;
            }
            // Closed by the server: a read says so (an answer, EOF or a reset).
            match tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut buf)).await {
                Ok(_) => return,
                Err(_) => continue,
            }
        }
    };
    let limit = Duration::from_secs(8);
    tokio::time::timeout(limit, trickling).await.expect("the trickling socket is closed");
    let mut buf = Vec::new();
    tokio::time::timeout(limit, silent.read_to_end(&mut buf))
        .await
        .expect("the silent socket is closed")
        .ok();
    assert!(started.elapsed() < limit, "closed after {:?}", started.elapsed());
}

#[tokio::test]
async fn connections_past_the_limits_are_closed_and_others_still_served() {
    let limits = UiLimits { max_connections: 8, max_connections_per_address: 3, ..UiLimits::default() };
    let (ui, _dir) = serve_config(UiConfig { limits, ..UiConfig::new(Access::Open) }).await;
    // Three idle sockets of 127.0.0.2 hold its share; its fourth is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 2], ui.addr).await);
    }
    // Give the server time to accept them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fourth = connect_from([127, 0, 0, 2], ui.addr).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the fourth is closed unanswered: {read:?} {buf:?}");
    // Another address is served.
    let page = request_from([127, 0, 0, 1], ui.addr, &get_with_host("/", &ui.addr.to_string(), "")).await;
    assert_eq!(page.status, 200);
    // The whole limit: five more addresses with one socket each fill the 8 slots; the next is closed.
    for last in 3..8 {
        held.push(connect_from([127, 0, 0, last], ui.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ninth = connect_from([127, 0, 0, 1], ui.addr).await;
    let read = tokio::time::timeout(Duration::from_secs(5), ninth.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "past the limit: closed: {read:?}");
    // Slots come back when sockets close (once the server has seen them close: tried until then).
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut tcp = connect_from([127, 0, 0, 2], ui.addr).await;
        tcp.write_all(get_with_host("/", &ui.addr.to_string(), "").as_bytes()).await.expect("sent");
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await;
        if raw.starts_with(b"HTTP/1.0 200") {
            break;
        }
        assert!(Instant::now() < deadline, "127.0.0.2 is served again once its sockets closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_body_past_the_limit_gets_413() {
    let (ui, _dir) = serve_config(token_config()).await;
    let big = format!("token={}", "x".repeat(64 * 1024));
    let answer = request_from([127, 0, 0, 1], ui.addr, &post("/login", ui.addr, "", &big)).await;
    assert_eq!(answer.status, 413, "{}", answer.head);
}

#[tokio::test]
async fn a_session_works_until_logout_and_its_cookie_is_strict() {
    let (ui, _dir) = serve_config(token_config()).await;
    let host = ui.addr.to_string();
    let login = log_in([127, 0, 0, 1], ui.addr).await;
    assert_eq!(login.status, 303, "{}", login.head);
    let set = set_cookie(&login);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "not over plain HTTP: {set}");
    let cookie = cookie_pair(&set);
    let value = cookie.split_once('=').map(|(_, v)| v.to_owned()).expect("name=value");
    assert_eq!(value.len(), 64, "32 random bytes in hex: {value}");
    let page = |cookie: String| {
        let host = host.clone();
        async move {
            request_from(
                [127, 0, 0, 1],
                ui.addr,
                &get_with_host("/groups", &host, &format!("Cookie: {cookie}\r\n")),
            )
            .await
            .status
        }
    };
    assert_eq!(page(cookie.clone()).await, 200);
    // A second login is another session.
    let other = cookie_pair(&set_cookie(&log_in([127, 0, 0, 1], ui.addr).await));
    assert_ne!(other, cookie);
    // Logging out ends that session only, and clears the cookie.
    let logout =
        request_from([127, 0, 0, 1], ui.addr, &post("/logout", &host, &format!("Cookie: {cookie}\r\n"), ""))
            .await;
    assert_eq!(logout.status, 303, "{}", logout.head);
    assert!(set_cookie(&logout).contains("Max-Age=0"), "{}", logout.head);
    assert_eq!(page(cookie).await, 401, "after logout");
    assert_eq!(page(other).await, 200);
}

/// The "Log out" button is on the pages of a login session only: basic auth and an open UI have
/// no session it could end (it was on every page, and did nothing there).
#[tokio::test]
async fn the_log_out_button_is_shown_to_a_login_session_only() {
    const BUTTON: &str = r#"action="/logout""#;
    let (ui, _dir) = serve_config(token_config()).await;
    let host = ui.addr.to_string();
    let cookie = cookie_pair(&set_cookie(&log_in([127, 0, 0, 1], ui.addr).await));
    let with_cookie = get_with_host("/groups", &host, &format!("Cookie: {cookie}\r\n"));
    let page = request_from([127, 0, 0, 1], ui.addr, &with_cookie).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(BUTTON), "a session's page has the button:\n{}", page.body);
    let right = base64::engine::general_purpose::STANDARD.encode(format!("me:{TOKEN}"));
    let basic = get_with_host("/groups", &host, &format!("Authorization: Basic {right}\r\n"));
    let page = request_from([127, 0, 0, 1], ui.addr, &basic).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(BUTTON), "basic auth has nothing to log out of:\n{}", page.body);
    // The login form itself, asked for without a session, has none either.
    let login = request_from([127, 0, 0, 1], ui.addr, &get_with_host("/login", &host, "")).await;
    assert!(login.body.contains("<form") && !login.body.contains(BUTTON), "{}", login.body);

    let (open, _dir) = serve_config(UiConfig::new(Access::Open)).await;
    let page = request_from([127, 0, 0, 1], open.addr, &get_with_host("/", &open.addr.to_string(), "")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(BUTTON), "an open UI has no session:\n{}", page.body);
}

#[tokio::test]
async fn a_session_expires() {
    let limits = UiLimits { session_ttl: Duration::from_secs(3), ..UiLimits::default() };
    let (ui, _dir) = serve_config(UiConfig { limits, ..token_config() }).await;
    let cookie = cookie_pair(&set_cookie(&log_in([127, 0, 0, 1], ui.addr).await));
    let text = get_with_host("/", &ui.addr.to_string(), &format!("Cookie: {cookie}\r\n"));
    assert_eq!(request_from([127, 0, 0, 1], ui.addr, &text).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(request_from([127, 0, 0, 1], ui.addr, &text).await.status, 401, "expired");
}

#[tokio::test]
async fn a_forged_cookie_is_refused() {
    use sha2::{Digest as _, Sha256};
    let (ui, _dir) = serve_config(token_config()).await;
    // The cookie of the old scheme, a digest of the token anyone who knows it can compute.
    let old = hex::encode(Sha256::digest(format!("lastword-ui-session\n{TOKEN}").as_bytes()));
    for cookie in
        [format!("lastword_ui={old}"), format!("lastword_ui={}", "0".repeat(64)), "lastword_ui=".into()]
    {
        let answer = request_from(
            [127, 0, 0, 1],
            ui.addr,
            &get_with_host("/", &ui.addr.to_string(), &format!("Cookie: {cookie}\r\n")),
        )
        .await;
        assert_eq!(answer.status, 401, "{cookie}");
    }
}

#[tokio::test]
async fn wrong_passwords_from_one_address_are_limited() {
    // A window long enough that the checks below fit in it on a loaded machine.
    let window = Duration::from_secs(8);
    let limits = UiLimits { login_failures: 3, login_window: window, ..UiLimits::default() };
    let (ui, _dir) = serve_config(UiConfig { limits, ..token_config() }).await;
    let attacker = [127, 0, 0, 2];
    let started = Instant::now();
    for _ in 0..3 {
        let wrong = request_from(attacker, ui.addr, &post("/login", ui.addr, "", "token=guess")).await;
        assert_eq!(wrong.status, 401);
    }
    // The fourth attempt is refused even with the right token, by form and by basic auth.
    assert_eq!(log_in(attacker, ui.addr).await.status, 429);
    let right = base64::engine::general_purpose::STANDARD.encode(format!("me:{TOKEN}"));
    let basic = format!("Authorization: Basic {right}\r\n");
    let host = ui.addr.to_string();
    assert_eq!(request_from(attacker, ui.addr, &get_with_host("/", &host, &basic)).await.status, 429);
    // Another address still logs in.
    assert_eq!(log_in([127, 0, 0, 1], ui.addr).await.status, 303);
    assert_eq!(request_from([127, 0, 0, 1], ui.addr, &get_with_host("/", &host, &basic)).await.status, 200);
    assert!(started.elapsed() < window, "checked within the window: {:?}", started.elapsed());
    // When the window has passed, the address may try again.
    tokio::time::sleep(window.saturating_sub(started.elapsed()) + Duration::from_millis(300)).await;
    assert_eq!(log_in(attacker, ui.addr).await.status, 303);

    // Wrong basic-auth passwords count too.
    let other = [127, 0, 0, 3];
    let wrong = base64::engine::general_purpose::STANDARD.encode("me:guess");
    for _ in 0..3 {
        let answer = request_from(
            other,
            ui.addr,
            &get_with_host("/", &host, &format!("Authorization: Basic {wrong}\r\n")),
        )
        .await;
        assert_eq!(answer.status, 401);
    }
    assert_eq!(request_from(other, ui.addr, &get_with_host("/", &host, &basic)).await.status, 429);
}

#[tokio::test]
async fn a_cross_origin_post_is_refused() {
    let (ui, _dir) = serve_config(token_config()).await;
    let host = ui.addr.to_string();
    let form = format!("token={TOKEN}");
    // Another site's form, as browsers send it: its Origin, or Sec-Fetch-Site: cross-site.
    for extra in [
        "Origin: http://attacker.example\r\n".to_owned(),
        "Origin: null\r\n".to_owned(),
        format!("Origin: https://{host}\r\n"),
        "Sec-Fetch-Site: cross-site\r\n".to_owned(),
        format!("Origin: http://{host}\r\nSec-Fetch-Site: same-site\r\n"),
    ] {
        let answer = request_from([127, 0, 0, 1], ui.addr, &post("/login", &host, &extra, &form)).await;
        assert_eq!(answer.status, 403, "{extra}");
        assert!(!answer.head.to_ascii_lowercase().contains("set-cookie"), "{}", answer.head);
    }
    // This server's own form.
    let own = format!("Origin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n");
    let login = request_from([127, 0, 0, 1], ui.addr, &post("/login", &host, &own, &form)).await;
    assert_eq!(login.status, 303);
    let cookie = cookie_pair(&set_cookie(&login));
    // A cross-origin logout does not end the session.
    let forged = format!("Cookie: {cookie}\r\nOrigin: http://attacker.example\r\n");
    assert_eq!(request_from([127, 0, 0, 1], ui.addr, &post("/logout", &host, &forged, "")).await.status, 403);
    let page =
        request_from([127, 0, 0, 1], ui.addr, &get_with_host("/", &host, &format!("Cookie: {cookie}\r\n")))
            .await;
    assert_eq!(page.status, 200);
}

#[tokio::test]
async fn the_ui_is_served_over_tls() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("written");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("written");
    let tls = crate::server::tls_server_config(&cert_path, &key_path).expect("the pair loads");
    let (ui, _store) = serve_config(UiConfig { tls: Some(tls), ..token_config() }).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("a root");
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = format!("localhost:{}", ui.addr.port());
    let exchange = |text: String| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(ui.addr).await.expect("the UI accepts");
            let name = ServerName::try_from("localhost").expect("a name");
            let mut tls = connector.connect(name, tcp).await.expect("the TLS handshake");
            tls.write_all(text.as_bytes()).await.expect("sent");
            let mut raw = Vec::new();
            // The server may end without close_notify after an HTTP/1.0 answer: what was read counts.
            let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut raw)).await;
            String::from_utf8(raw).expect("UTF-8")
        }
    };
    let login =
        exchange(post("/login", &host, &format!("Origin: https://{host}\r\n"), &format!("token={TOKEN}")))
            .await;
    assert!(login.starts_with("HTTP/1.1 303") || login.starts_with("HTTP/1.0 303"), "{login}");
    let set = login
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")))
        .map(|(_, v)| v.trim().to_owned())
        .expect("a cookie");
    assert!(set.contains("; Secure"), "Secure over TLS: {set}");
    let cookie = cookie_pair(&set);
    let page = exchange(get_with_host("/", &host, &format!("Cookie: {cookie}\r\n"))).await;
    assert!(page.contains(" 200 OK"), "{page}");
    assert!(page.contains("<h1"), "{page}");
    // Plain HTTP on the TLS port gets no page.
    let plain = tokio::time::timeout(Duration::from_secs(15), async {
        let mut tcp = connect_from([127, 0, 0, 1], ui.addr).await;
        tcp.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.expect("sent");
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw).await;
        raw
    })
    .await
    .expect("closed");
    assert!(!String::from_utf8_lossy(&plain).contains("HTTP/1.1"), "{plain:?}");
}
