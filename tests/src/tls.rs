//! Test certificates.

use std::path::Path;
use std::process::Command;

/// Writes into `dir` a CA (`ca.pem`, `ca.key`), and certificates it signed:
/// `server.pem`/`server.key` for `localhost`, and `client.pem`/`client.key`
/// for client authentication. Made with openssl, valid a day.
pub fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=portwarden-test-ca",
    ]);
    for (name, ext) in [("server", "subjectAltName=DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")] {
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).expect("ext");
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}
