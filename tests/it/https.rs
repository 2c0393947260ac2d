//! HTTPS of our own: a self-signed certificate made in the test, served by
//! the real daemon; the admin listener on TLS when not loopback; the
//! certificate reloaded on SIGHUP (a bad file keeps the old one); plain
//! http targets to other machines refused.

use crate::lifecycle::Daemon;
use crate::support::*;
use std::path::Path;

/// Writes a self-signed certificate for `localhost` and 127.0.0.1 as
/// `{name}.crt` / `{name}.key`; returns the certificate PEM.
fn self_signed(dir: &Path, name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    cert.pem()
}

/// A client that trusts only `pem` (the built-in roots would not know it).
fn client_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn post_signed(client: &reqwest::Client, url: &str, n: u64) -> Result<u16, reqwest::Error> {
    let body = clickup_event(n);
    let mut req = client
        .post(format!("{url}/hooks/clickup"))
        .body(body.clone());
    for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
        req = req.header(k, v);
    }
    Ok(req.send().await?.status().as_u16())
}

/// With tls_cert and tls_key the webhook listener speaks HTTPS only (TLS 1.2
/// and 1.3), and a non-loopback admin listener does too; a loopback one stays
/// plain for local tools.
#[tokio::test]
async fn the_webhook_listener_and_a_public_admin_listener_serve_https() {
    let certs = tempfile::tempdir().unwrap();
    let pem = self_signed(certs.path(), "a");
    let files = clickup_bridge::tls::TlsFiles {
        cert: certs.path().join("a.crt"),
        key: certs.path().join("a.key"),
    };
    let app = spawn_app_with(ROUTES, |s| {
        s.http.tls = Some(files.clone());
        s.admin_listen = "0.0.0.0:0".into();
        s.admin_token = Some("t0k".into());
    })
    .await;
    let port = app.url.rsplit(':').next().unwrap();
    let https = format!("https://localhost:{port}");
    let client = client_trusting(&pem);
    assert_eq!(post_signed(&client, &https, 1).await.unwrap(), 200);
    // TLS 1.2 is accepted as well.
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(post_signed(&tls12, &https, 2).await.unwrap(), 200);
    // Plain HTTP on the same port gets no answer it could use.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", app.url))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    // The admin listener binds 0.0.0.0: HTTPS there too.
    let admin_port = app.admin_url.rsplit(':').next().unwrap();
    let r = client
        .get(format!("https://127.0.0.1:{admin_port}/api/v1/events"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.store.count_events().await.unwrap(), 2);

    // POST /api/v1/reload reloads the certificate too, as SIGHUP does.
    let renewed = self_signed(certs.path(), "b");
    std::fs::copy(certs.path().join("b.crt"), &files.cert).unwrap();
    std::fs::copy(certs.path().join("b.key"), &files.key).unwrap();
    let either = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(pem.as_bytes()).unwrap(),
            reqwest::Certificate::from_pem(renewed.as_bytes()).unwrap(),
        ])
        .build()
        .unwrap();
    let r = either
        .post(format!("https://127.0.0.1:{admin_port}/api/v1/reload"))
        .bearer_auth("t0k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post_signed(&client_trusting(&renewed), &https, 3)
            .await
            .unwrap(),
        200
    );
    assert!(
        post_signed(&client_trusting(&pem), &https, 4)
            .await
            .is_err()
    );
    app.stop().await;
}

/// SIGHUP serves a renewed certificate to new connections; a file that does
/// not load keeps the old one and says so in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
    let old = self_signed(dir.path(), "old");
    let new = self_signed(dir.path(), "new");
    std::fs::copy(dir.path().join("old.crt"), dir.path().join("live.crt")).unwrap();
    std::fs::copy(dir.path().join("old.key"), dir.path().join("live.key")).unwrap();
    let env = [
        ("RUST_LOG", "info"),
        ("CLICKUP_BRIDGE_TLS_CERT", "live.crt"),
        ("CLICKUP_BRIDGE_TLS_KEY", "live.key"),
    ];
    let mut d = Daemon::start_on(dir.path(), 0, &env);
    d.wait_for_log("clickup-bridge serving");
    let url = format!("https://localhost:{}", d.port);
    assert_eq!(
        post_signed(&client_trusting(&old), &url, 1).await.unwrap(),
        200
    );
    assert!(post_signed(&client_trusting(&new), &url, 2).await.is_err());

    // certbot's deploy hook: new files in place, then SIGHUP.
    std::fs::copy(dir.path().join("new.crt"), dir.path().join("live.crt")).unwrap();
    std::fs::copy(dir.path().join("new.key"), dir.path().join("live.key")).unwrap();
    d.signal("-HUP");
    d.wait_for_log("certificate reloaded");
    assert_eq!(
        post_signed(&client_trusting(&new), &url, 3).await.unwrap(),
        200
    );
    assert!(post_signed(&client_trusting(&old), &url, 4).await.is_err());

    std::fs::write(dir.path().join("live.crt"), "half a certificate").unwrap();
    d.signal("-HUP");
    d.wait_for_log("certificate reload failed, the old certificate stays in force");
    assert_eq!(
        post_signed(&client_trusting(&new), &url, 5).await.unwrap(),
        200
    );
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
}

/// `check` refuses an http:// target on another machine, naming the fix,
/// and accepts it with allow_http: true; loopback stays allowed.
#[test]
fn plain_http_targets_to_other_hosts_need_allow_http() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let check = |targets: &str| {
        let routes = format!(
            "version: 1\nsources:\n  s:\n    verify: header\n    header: X-T\n    secret: t\n\
targets:\n{targets}routes:\n  - name: r\n    source: s\n    send:\n      - target: h\n        body: {{a: 1}}\n"
        );
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let (code, out, err) = run_output(
            std::process::Command::new(bin())
                .args(["check", "--routes", "routes.yaml"])
                .current_dir(dir.path())
                .env_clear(),
        );
        (code, out + &err)
    };
    let (code, out) = check("  h:\n    type: http\n    url: http://forecast.example.com/in\n");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("url is http:// to forecast.example.com") && out.contains("allow_http: true"),
        "{out}"
    );
    let (code, out) = check(
        "  h:\n    type: http\n    url: http://forecast.example.com/in\n    allow_http: true\n",
    );
    assert_eq!(code, 0, "{out}");
    for local in [
        "http://127.0.0.1:9/in",
        "http://localhost:9/in",
        "http://[::1]:9/in",
    ] {
        let (code, out) = check(&format!("  h:\n    type: http\n    url: {local}\n"));
        assert_eq!(code, 0, "{local}: {out}");
    }
    let (code, out) = check(
        "  h:\n    type: jira\n    base_url: http://jira.internal\n    email: a@b.c\n    api_token: x\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("base_url is http:// to jira.internal"),
        "{out}"
    );
}
