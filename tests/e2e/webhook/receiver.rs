//! The tests' own webhook receiver: records what arrives, answers as told.

use super::*;

pub(crate) const SECRET: &str = "receiver-test-secret";

/// How the receiver answers one request.
#[derive(Clone, Copy)]
pub(crate) enum Reply {
    Status(u16, Option<&'static str>, &'static str),
    /// Answer only after this long (past the client's timeout).
    Hang(Duration),
}

#[derive(Default)]
pub(crate) struct Received {
    /// Alerts of acknowledged requests.
    pub(crate) alerts: Vec<Value>,
    /// Each request: when, how many alerts, the status answered.
    pub(crate) requests: Vec<(Instant, usize, u16)>,
    pub(crate) bad_signatures: usize,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) received: Mutex<Received>,
    /// Answers for the next requests, in order; then `otherwise`.
    pub(crate) script: Mutex<VecDeque<Reply>>,
    /// The answer when the script is empty (200 when `None`).
    pub(crate) otherwise: Mutex<Option<u16>>,
}

/// The test's webhook receiver.
pub(crate) struct Receiver {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) shared: Arc<Shared>,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
    /// The network namespace it listens in (`None`: the test's own).
    pub(crate) netns: Option<PathBuf>,
}

impl Receiver {
    pub(crate) fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        Self::start_with(tls, None)
    }

    /// A receiver on the loopback of the network namespace at `netns` (a
    /// pod's network, made by the test).
    pub(crate) fn start_in_netns(netns: &Path) -> Receiver {
        Self::start_with(None, Some(netns.to_path_buf()))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, netns: Option<PathBuf>) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        let mut r = Receiver { rt, shared: Default::default(), addr, tls, task: None, netns };
        r.listen();
        r
    }

    /// A socket in the receiver's network namespace: made on a thread of
    /// its own that enters the namespace (a socket belongs to the namespace
    /// it was made in, whichever thread uses it).
    fn socket(&self) -> tokio::net::TcpSocket {
        let Some(netns) = &self.netns else { return tokio::net::TcpSocket::new_v4().unwrap() };
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(netns).unwrap();
                use std::os::fd::AsRawFd;
                // SAFETY: a valid namespace fd; only this short-lived thread moves.
                assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {}", netns.display());
                tokio::net::TcpSocket::new_v4().unwrap()
            })
            .join()
            .unwrap()
        })
    }

    /// Starts listening (again, on the same port after `stop`).
    pub(crate) fn listen(&mut self) {
        let socket = self.socket();
        socket.set_reuseaddr(true).unwrap();
        let listener = self.rt.block_on(async {
            socket.bind(self.addr).unwrap();
            socket.listen(128).unwrap()
        });
        self.addr = listener.local_addr().unwrap();
        let app =
            Router::new().route("/", post(receive)).route("/alerts", post(receive)).with_state(self.shared.clone());
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        self.task = Some(self.rt.spawn(serve(listener, app, tls)));
    }

    /// Goes down: the listener and every open connection close.
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = self.rt.block_on(t);
        }
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/alerts", self.addr)
    }

    pub(crate) fn script(&self, replies: &[Reply]) {
        self.shared.script.lock().unwrap().extend(replies.iter().copied());
    }

    pub(crate) fn otherwise(&self, status: Option<u16>) {
        *self.shared.otherwise.lock().unwrap() = status;
    }

    /// Ids of the acknowledged alerts (`id` in Vigil's format, `uuid` in Falco's).
    pub(crate) fn ids(&self) -> Vec<String> {
        let r = self.shared.received.lock().unwrap();
        r.alerts.iter().map(|a| a.get("id").or_else(|| a.get("uuid")).unwrap().as_str().unwrap().to_string()).collect()
    }

    pub(crate) fn alerts(&self) -> Vec<Value> {
        self.shared.received.lock().unwrap().alerts.clone()
    }

    pub(crate) fn requests(&self) -> Vec<(Instant, usize, u16)> {
        self.shared.received.lock().unwrap().requests.clone()
    }

    pub(crate) fn bad_signatures(&self) -> usize {
        self.shared.received.lock().unwrap().bad_signatures
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: tokio::net::TcpListener, app: Router, tls: Option<tokio_rustls::TlsAcceptor>) {
    // Aborting this task drops the set, which aborts every connection.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (app, tls) = (app.clone(), tls.clone());
        conns.spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

pub(crate) fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn receive(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let signed = headers.get("x-vigil-signature").and_then(|v| v.to_str().ok()) == Some(sign(&body).as_str());
    let reply = s.script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or(Reply::Status(s.otherwise.lock().unwrap().unwrap_or(200), None, ""));
    let status = match reply {
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            // The client gave up long ago: not acknowledged.
            s.received.lock().unwrap().requests.push((Instant::now(), 0, 0));
            return StatusCode::OK.into_response();
        }
        Reply::Status(status, _, _) => status,
    };
    let mut json = body.to_vec();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
        json = out;
    }
    let alerts: Vec<Value> = match serde_json::from_slice(&json).unwrap() {
        Value::Array(items) => items,
        one => vec![one],
    };
    let n = alerts.len();
    {
        let mut r = s.received.lock().unwrap();
        r.requests.push((Instant::now(), n, status));
        if !signed {
            r.bad_signatures += 1;
        }
        if (200..300).contains(&status) {
            r.alerts.extend(alerts);
        }
    }
    let mut resp = (
        StatusCode::from_u16(status).unwrap(),
        match reply {
            Reply::Status(_, _, body) => body,
            Reply::Hang(_) => "",
        },
    )
        .into_response();
    if let Reply::Status(_, Some(after), _) = reply {
        resp.headers_mut().insert("retry-after", after.parse().unwrap());
    }
    resp
}
