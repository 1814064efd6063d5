//! The terminal clients behind a TLS terminator, as deployed: the real binary serves plain
//! HTTP on 127.0.0.1, an in-test rustls proxy with a certificate for `localhost` from a CA
//! made at test time forwards to it, and `switchboard agent` / `switchboard chat` reach it with
//! `--url https://localhost:PORT`, trusting the CA through `SSL_CERT_FILE`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::Proc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The binary with `SSL_CERT_FILE` set to `ca` (or unset), reading stdout or stderr.
fn spawn(args: &[&str], ca: Option<&Path>, read_stderr: bool) -> Proc {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args).env("RUST_LOG", "info").env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca);
    }
    Proc::spawn_with(cmd, read_stderr)
}

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchboard-tls-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A CA, and a certificate for `localhost` it signed: (CA certificate PEM, leaf DER, leaf key).
fn certificates(ca_name: &str) -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (ca.pem(), leaf.der().clone(), key)
}

/// A TLS terminator on 127.0.0.1:0 that forwards each connection's bytes to `upstream`.
/// Returns its port.
fn tls_proxy(
    rt: &tokio::runtime::Runtime,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    upstream: String,
) -> u16 {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A failed handshake (an untrusting client) just drops the connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

#[test]
fn the_clients_reach_a_gateway_behind_a_tls_terminator() {
    let dir = temp_dir("main");
    let mut server =
        Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--data-dir", &dir.join("data").to_string_lossy()], true);
    let upstream = server.listening_address();

    let (ca_pem, cert, key) = certificates("Switchboard test CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (other_ca_pem, _, _) = certificates("Some other CA");
    let other_ca_file = dir.join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca_pem).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let port = tls_proxy(&rt, cert, key, upstream);
    let url = format!("https://localhost:{port}");

    // Trusting the test CA: a full round trip over TLS, both the token request and the
    // WebSockets.
    let mut alice = spawn(&["agent", "--url", &url, "--id", "alice"], Some(&ca_file), false);
    alice.expect("Signed in as alice (available)");
    let mut ann = spawn(&["chat", "--url", &url, "--name", "Ann"], Some(&ca_file), false);
    ann.expect("Connected to ChatWorkStream as Ann");
    ann.expect("contoso-bot: Hi Ann");
    ann.type_line("I lost my credit card");
    ann.expect("contoso-bot: Was your card lost or stolen?");
    ann.type_line("stolen");
    ann.expect("[Alice (agent) joined the conversation]");
    alice.expect("=== #1 Ann — CreditCardQueue (chat) ===");
    alice.expect("(now talking in #1 with Ann)");
    alice.type_line("Hello Ann, over TLS.");
    ann.expect("Alice: Hello Ann, over TLS.");
    ann.type_line("/quit");
    assert_eq!(ann.wait_exit(), Some(0));
    alice.type_line("/quit");
    assert_eq!(alice.wait_exit(), Some(0));

    // Trusting only the platform's CAs: the certificate is not trusted, sign-in fails clearly.
    let mut untrusted = spawn(&["agent", "--url", &url, "--id", "alice"], None, true);
    let line = untrusted.expect("cannot sign in as alice");
    assert!(line.contains(&url), "{line}");
    assert_eq!(untrusted.wait_exit(), Some(1));

    // Trusting another CA: the error names the certificate problem.
    let mut other = spawn(&["agent", "--url", &url, "--id", "alice"], Some(&other_ca_file), true);
    let line = other.expect("cannot sign in as alice");
    assert!(line.contains("certificate"), "{line}");
    assert_eq!(other.wait_exit(), Some(1));

    // The customer's client fails the same way.
    let mut ann = spawn(&["chat", "--url", &url, "--name", "Ann"], Some(&other_ca_file), true);
    let line = ann.expect("cannot connect to");
    assert!(line.contains("certificate"), "{line}");
    assert_eq!(ann.wait_exit(), Some(1));

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
