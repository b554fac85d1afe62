//! A tiny HTTP/1.1 client over `std::net::TcpStream`: enough to drive Apache in tests
//! (keep-alive, HEAD, chunked and Content-Length bodies, raw request bytes).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Upper bound on any single blocking read, so a misbehaving server fails a test instead of
/// hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> &str {
        self.header("Content-Type").unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pub port: u16,
}

impl Conn {
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
        )?;
        Conn::over(stream, port)
    }

    /// A connected stream to `port`, with the harness's timeouts.
    fn over(stream: TcpStream, port: u16) -> std::io::Result<Conn> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            port,
        })
    }

    /// Connects to 127.0.0.1:`port` from the loopback address `src` (any of 127/8 is this
    /// machine), so that tests can play several clients.
    pub fn connect_from(src: [u8; 4], port: u16) -> std::io::Result<Conn> {
        use std::os::fd::FromRawFd;
        let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a new socket; on success its descriptor is owned by the TcpStream below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is ours and open; nothing else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let (from, to) = (sockaddr(src, 0), sockaddr([127, 0, 0, 1], port));
        // SAFETY: valid sockaddr_in values and their length, on our socket.
        let bound = unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) };
        // SAFETY: as above.
        if bound != 0
            || unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Conn::over(stream, port)
    }

    /// Our (client-side) port: what the server shows as the client's port.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a request. `host` defaults to `127.0.0.1:<port>`; `keep_alive` false adds
    /// `Connection: close`.
    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        host: Option<&str>,
        keep_alive: bool,
        extra_headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let host = host
            .map(str::to_string)
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port));
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: socket-guard-tests\r\n"
        );
        if !keep_alive {
            req.push_str("Connection: close\r\n");
        }
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes)
    }

    /// Sends a request and reads its response on this (kept-alive) connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        host: Option<&str>,
    ) -> std::io::Result<Response> {
        self.send_request(method, path, host, true, &[], b"")?;
        self.read_response(method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.request("GET", path, None)
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed mid-line",
                ));
            }
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} of {} body bytes",
                        self.buf.len(),
                        n
                    ),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response. `head` means the request was HEAD (no body follows whatever the
    /// headers say).
    pub fn read_response(&mut self, head: bool) -> std::io::Result<Response> {
        loop {
            let resp = self.read_one(head)?;
            if resp.status >= 200 || resp.status == 101 {
                return Ok(resp);
            }
            // 1xx interim response: skip.
        }
    }

    fn read_one(&mut self, head: bool) -> std::io::Result<Response> {
        let status_line = self.read_line()?;
        let mut parts = status_line.splitn(3, ' ');
        let proto = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| proto.starts_with("HTTP/"))
            .ok_or_else(|| {
                std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                std::io::Error::new(ErrorKind::InvalidData, format!("bad header line {line:?}"))
            })?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        let chunked = resp
            .header("Transfer-Encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            loop {
                let size_line = self.read_line()?;
                let size_hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
                    std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad chunk size {size_line:?}"),
                    )
                })?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let data = self.read_exact_buf(size)?;
                resp.body.extend_from_slice(&data);
                let crlf = self.read_exact_buf(2)?;
                if crlf != b"\r\n" {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ));
                }
            }
        } else if let Some(cl) = resp.header("Content-Length") {
            let n: usize = cl.parse().map_err(|_| {
                std::io::Error::new(ErrorKind::InvalidData, format!("bad Content-Length {cl:?}"))
            })?;
            resp.body = self.read_exact_buf(n)?;
        } else {
            // Delimited by close.
            while self.fill()? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads until the peer closes; returns whatever bytes arrived (after anything already
    /// buffered). Fails if the peer does not close within `timeout`.
    pub fn read_to_close(&mut self, timeout: Duration) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        let result = loop {
            match self.fill() {
                Ok(0) => break Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > deadline {
                        break Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            "peer did not close",
                        ));
                    }
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    break Ok(std::mem::take(&mut self.buf))
                }
                Err(e) => break Err(e),
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }

    /// Sends our FIN (half-close); the server then sees EOF on its next read.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Full close (dropping does the same).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
