//! A small HTTP/1.1 file server on 127.0.0.1 for the download tests: serves a folder, honours
//! `Range: bytes=N-` with 206 answers, logs each request, and can drop the first transfer of a file
//! halfway (announcing the full length), as a broken connection would.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One request the server saw: the path and the first byte asked for (0 without a range).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub from: u64,
}

pub struct Server {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `root`; with `cut_first`, the first full transfer of each file stops halfway.
    pub fn start(root: &Path, cut_first: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (root, log) = (root.to_path_buf(), seen.clone());
        std::thread::spawn(move || {
            let mut cut: Vec<String> = Vec::new();
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &root, &log, cut_first, &mut cut);
            }
        });
        Server { base, seen }
    }

    pub fn url(&self, file: &str) -> String {
        format!("{}/{file}", self.base)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    log: &Mutex<Vec<Seen>>,
    cut_first: bool,
    cut: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut from = 0u64;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                from = v
                    .trim()
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap_or(0);
            }
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        from,
    });
    let file: PathBuf = root.join(path.trim_start_matches('/'));
    let Ok(bytes) = std::fs::read(&file) else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let total = bytes.len() as u64;
    let body = &bytes[from.min(total) as usize..];
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{total}\r\nConnection: close\r\n\r\n",
            body.len(),
            total - 1
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        )
    };
    stream.write_all(head.as_bytes())?;
    if cut_first && from == 0 && !cut.contains(&path) {
        cut.push(path);
        stream.write_all(&body[..body.len() / 2])?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(body)
}
