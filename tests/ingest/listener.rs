//! The admin listener against slow and greedy clients, over real TCP (issue 16, step 2): a
//! client that dribbles its headers is cut off at the header-read timeout, and connections
//! that hold the cap do not stop the probes from answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use altinn_sync::admin::{self, AdminSettings, Health, OVERFLOW_HEADER_READ_TIMEOUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the bounds below allow on top of a timeout, on a busy two-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// Idle connections opened beyond the cap.
const FLOOD: usize = 200;

struct Listener {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    served: JoinHandle<Result<(), admin::Error>>,
}

async fn listen(header_read_timeout_secs: u64, max_connections: u32) -> Listener {
    let settings = AdminSettings {
        admin_listen: ([127, 0, 0, 1], 0).into(),
        admin_tokens_file: None,
        admin_header_read_timeout_secs: header_read_timeout_secs,
        admin_max_connections: max_connections,
        api: admin::ApiSettings::default(),
    };
    let server = admin::Server::bind_with(&settings).await.unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let app = admin::router(Arc::new(Health::default()), None);
    let served = tokio::spawn(server.serve(app, stop.clone()));
    Listener { addr, stop, served }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    closes: bool,
}

/// One request on `stream`, read to the end of its answer (the probes' bodies are small).
async fn get(stream: &mut TcpStream, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before an answer to {path}");
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while got.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed within the answer to {path}");
        got.extend_from_slice(&chunk[..n]);
    }
    Answer {
        status,
        closes: head.contains("\r\nconnection: close"),
    }
}

/// Reads until the server closes `stream` (end of file or a reset); what it sent first.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got).await {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn a_client_dribbling_its_headers_is_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_secs(1);
    let listener = listen(timeout.as_secs(), 8).await;
    let started = Instant::now();
    let (mut read, mut write) = TcpStream::connect(listener.addr)
        .await
        .unwrap()
        .into_split();
    // One header line every 100 ms, never the blank line that ends them. The interval is the
    // slow client's pace; nothing here waits on it to see what the server did.
    let dribbler = tokio::spawn(async move {
        write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n")
            .await
            .unwrap();
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        let mut lines = 0u32;
        loop {
            pace.tick().await;
            let line = format!("X-Slow-{lines}: 1\r\n");
            if write.write_all(line.as_bytes()).await.is_err() {
                return lines;
            }
            lines += 1;
        }
    });

    let got = tokio::time::timeout(timeout + MARGIN, until_closed(&mut read))
        .await
        .expect("the dribbling connection is closed within the header timeout and a margin");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= timeout,
        "closed after {closed_after:?}, before the header timeout of {timeout:?}"
    );
    let answer = String::from_utf8_lossy(&got);
    assert!(
        !answer.contains(" 200 "),
        "the headers never ended: {answer}"
    );
    // It was still sending when it was cut off: the timeout bounds the whole head, not a pause.
    let lines = tokio::time::timeout(MARGIN, dribbler)
        .await
        .expect("the dribbler's writes fail once the connection is closed")
        .unwrap();
    assert!(
        lines >= 5,
        "only {lines} header lines were sent before the close"
    );
    println!(
        "dribbling connection closed after {closed_after:?} (header timeout {timeout:?}, {lines} lines sent)"
    );

    listener.stop.cancel();
    listener.served.await.unwrap().unwrap();
}

// One listener through its states (cap held, a flood beyond it, the flood expired, shutdown):
// each step needs the connections of the one before.
#[tokio::test]
async fn idle_connections_holding_the_cap_do_not_stop_the_probes() {
    let cap = 8;
    // Long enough that the connections holding the cap outlive the test.
    let listener = listen(60, cap).await;

    // Each holder is served first, so it is known to hold a slot, then sits idle in keep-alive.
    let mut holders = Vec::new();
    for _ in 0..cap {
        let mut holder = TcpStream::connect(listener.addr).await.unwrap();
        let answer = get(&mut holder, "/healthz").await;
        assert_eq!(answer.status, 200);
        assert!(!answer.closes, "a connection under the cap is kept alive");
        holders.push(holder);
    }

    // At the cap, a probe is answered, once, and its connection closed.
    for path in ["/readyz", "/healthz"] {
        let mut probe = TcpStream::connect(listener.addr).await.unwrap();
        let answered = Instant::now();
        let answer = get(&mut probe, path).await;
        assert!(
            [200, 503].contains(&answer.status),
            "{path} answered {answer:?}"
        );
        assert!(
            answer.closes,
            "{path} beyond the cap is served without keep-alive"
        );
        assert!(until_closed(&mut probe).await.is_empty());
        println!(
            "{path} at the cap of {cap}: {} in {:?}",
            answer.status,
            answered.elapsed()
        );
    }

    // A flood of idle connections beyond the cap: each newcomer pushes out the oldest overflow
    // connection that has sent nothing, so a probe is still answered at once.
    let flooded = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..FLOOD {
        idle.push(TcpStream::connect(listener.addr).await.unwrap());
    }
    for path in ["/readyz", "/healthz"] {
        let mut probe = TcpStream::connect(listener.addr).await.unwrap();
        let asked = Instant::now();
        let answer = get(&mut probe, path).await;
        assert!([200, 503].contains(&answer.status), "{path}: {answer:?}");
        println!(
            "{path} after {FLOOD} idle connections beyond the cap of {cap}: {} in {:?}",
            answer.status,
            asked.elapsed()
        );
    }
    // The pushed-out ones were closed at once, not at the overflow's header timeout.
    let (pushed_out, last) = idle.split_at_mut(FLOOD - admin::OVERFLOW);
    for conn in pushed_out {
        assert!(until_closed(conn).await.is_empty());
    }
    let pushed_out_after = flooded.elapsed();
    assert!(
        pushed_out_after < OVERFLOW_HEADER_READ_TIMEOUT,
        "the pushed-out connections were closed only after {pushed_out_after:?}"
    );
    // The last ones, left in the overflow, go at its short header timeout.
    for conn in last {
        let got = tokio::time::timeout(OVERFLOW_HEADER_READ_TIMEOUT + MARGIN, until_closed(conn))
            .await
            .expect("an idle overflow connection is closed at the overflow's header timeout");
        assert!(got.is_empty());
    }
    println!(
        "{} pushed out within {pushed_out_after:?}; all {FLOOD} closed within {:?}",
        FLOOD - admin::OVERFLOW,
        flooded.elapsed()
    );
    // The holders of the cap are still served, in keep-alive.
    let answer = get(&mut holders[0], "/readyz").await;
    assert!(
        [200, 503].contains(&answer.status) && !answer.closes,
        "{answer:?}"
    );

    // Shutdown closes the idle keep-alive connections rather than waiting out their timeout.
    listener.stop.cancel();
    tokio::time::timeout(MARGIN, listener.served)
        .await
        .expect("the listener stops with idle connections open")
        .unwrap()
        .unwrap();
    for mut holder in holders {
        assert!(until_closed(&mut holder).await.is_empty());
    }
}
