//! A local S3-compatible server (moto's, from the test venv that scripts/setup.sh makes) on
//! 127.0.0.1, and our fault-injecting proxy (`fault_proxy.py`) in front of it; both stop on drop.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proc {
    child: Child,
    pub endpoint: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's S3 server on a free port (up within 30 s, else the test fails saying so).
pub fn moto(venv_bin: &Path) -> Proc {
    let port = free_port();
    let child = Command::new(venv_bin.join("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server (scripts/setup.sh installs it into .cache/venv)");
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Proc {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// The fault proxy in front of `upstream`: every fifth request gets a 503 or a dropped connection.
/// Its log (one line per request) goes to `log`.
pub fn fault_proxy(upstream: &str, log: &Path) -> Proc {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fault_proxy.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([&port.to_string(), upstream, "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the fault proxy");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("ready"), "fault proxy: {first}");
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        // Each line rewrites the log whole, through a rename: a reader never sees it truncated
        // (a plain rewrite did that, and a test read an empty log).
        let tmp = log.with_extension("tmp");
        let mut all = String::new();
        for line in out.lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if std::fs::write(&tmp, &all).is_ok() {
                let _ = std::fs::rename(&tmp, &log);
            }
        }
    });
    Proc {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// PUT `body` at `path` (a bucket, or bucket/key) on the server, unsigned (moto accepts that).
pub fn put(endpoint: &str, path: &str, body: &[u8]) {
    ureq::put(&format!("{endpoint}/{path}"))
        .send(body)
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
}

/// Uploads every file below `dir` to `bucket/prefix/<relative path>`.
pub fn upload_dir(endpoint: &str, dir: &Path, bucket: &str, prefix: &str) -> usize {
    let mut stack = vec![dir.to_path_buf()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            put(
                endpoint,
                &format!("{bucket}/{prefix}/{rel}"),
                &std::fs::read(&p).unwrap(),
            );
            n += 1;
        }
    }
    n
}

/// The keys below `prefix` in `bucket` (one listing page: fine for tests).
pub fn keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let xml = ureq::get(&format!("{endpoint}/{bucket}?list-type=2&prefix={prefix}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}
