//! Docker over TLS as the docker CLI has it: `DOCKER_HOST=tcp://…` (or `https://`) with
//! `DOCKER_TLS_VERIFY=1` and the client's certificates in `DOCKER_CERT_PATH`. The engine is
//! reached through a TLS front on loopback that requires a client certificate (Python's `ssl`
//! module; certificates made with `openssl` here). Not `socat`: its 1.7.4 fails every resumed
//! session once it verifies clients ("session id context uninitialized"), and the client
//! resumes. `DOCKER_TLS_VERIFY=1` over a plaintext socket is
//! refused, not ignored; certificates that do not match are a usage error with a hint.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SOCKET: &str = "/var/run/docker.sock";

fn components_or_skip(test: &str) -> bool {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(SOCKET).exists();
    let tools = ["python3", "openssl"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !(engine && tools) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: a Docker engine at {SOCKET}, python3 and openssl are required in CI"
        );
        eprintln!("SKIPPED {test}: needs a Docker engine at {SOCKET}, python3 and openssl");
    }
    engine && tools
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA in `dir` with a server certificate for 127.0.0.1 and a client certificate, laid out
/// as `DOCKER_CERT_PATH` wants (`ca.pem`, `cert.pem`, `key.pem`) plus `server-*.pem`.
pub(crate) fn certificates(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            &format!("/CN={name} CA"),
        ],
    );
    for (who, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}-key.pem"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        std::fs::write(dir.join(format!("{who}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{who}.pem"),
                "-extfile",
                &format!("{who}.ext"),
            ],
        );
    }
    std::fs::copy(dir.join("client.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(dir.join("client-key.pem"), dir.join("key.pem")).unwrap();
}

/// The TLS front: TLS (client certificate required) on 127.0.0.1:PORT, the engine's socket
/// behind it.
const FRONT: &str = r#"import socket, ssl, sys, threading
port, cert, key, ca, target = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("127.0.0.1", port))
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    # The TLS side ends with close_notify, the plain side with a half close.
    try:
        if isinstance(b, ssl.SSLSocket):
            b.unwrap().shutdown(socket.SHUT_WR)
        else:
            b.shutdown(socket.SHUT_WR)
    except (OSError, ValueError):
        pass
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError):
        c.close()
        return
    u = socket.socket(socket.AF_UNIX)
    u.connect(target)
    threading.Thread(target=pipe, args=(u, t), daemon=True).start()
    pipe(t, u)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The TLS front in front of the engine's socket; stopped by its pid when dropped.
struct Front {
    child: Child,
    port: u16,
}

impl Front {
    fn start(certs: &Path) -> Front {
        let port = crate::support::serve::free_port();
        let script = certs.join("front.py");
        std::fs::write(&script, FRONT).unwrap();
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(certs.join("server.pem"))
            .arg(certs.join("server-key.pem"))
            .arg(certs.join("ca.pem"))
            .arg(SOCKET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::support::serve::wait_listening(port, Duration::from_secs(20), "the TLS front");
        Front { child, port }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn suite(root: &Path) -> PathBuf {
    crate::support::sandbox::docker_app_task(&root.join("suite/tls"));
    root.join("suite")
}

fn check(suite: &Path, env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut cmd = crate::support::sandbox::tasks_check_cmd(&["--runner", "docker"], suite);
    cmd.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = crate::support::hermetic::output(&mut cmd);
    (Some(o.code), format!("{}{}", o.stdout, o.stderr))
}

#[test]
fn docker_over_tls_with_client_certificates_and_refusals() {
    if !components_or_skip("docker_over_tls_with_client_certificates_and_refusals") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let other = tmp.path().join("other");
    certificates(&good, "good");
    certificates(&other, "other");
    let front = Front::start(&good);
    let suite = suite(tmp.path());
    let tcp = format!("tcp://127.0.0.1:{}", front.port);
    let tls = |host: &str, certs: &Path| {
        vec![
            ("DOCKER_HOST", host.to_string()),
            ("DOCKER_TLS_VERIFY", "1".to_string()),
            ("DOCKER_CERT_PATH", certs.display().to_string()),
        ]
    };

    // The right certificates: the trials run through the TLS front.
    let (code, text) = check(&suite, &tls(&tcp, &good));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 task checked, 0 broken"), "{text}");

    // https:// says TLS by itself.
    let https = format!("https://127.0.0.1:{}", front.port);
    let (code, text) = check(&suite, &tls(&https, &good));
    assert_eq!(code, Some(0), "{text}");

    // Certificates of another CA: refused before any trial, as a usage error with a hint.
    let (code, text) = check(&suite, &tls(&tcp, &other));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("DOCKER_CERT_PATH"), "{text}");

    // DOCKER_TLS_VERIFY over a plaintext socket: refused, not ignored.
    let unix = format!("unix://{SOCKET}");
    let (code, text) = check(&suite, &tls(&unix, &good));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("DOCKER_TLS_VERIFY"), "{text}");
}
