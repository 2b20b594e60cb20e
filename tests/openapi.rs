//! docs/openapi.json stays true: it parses, it names exactly the routes the server lists (`ROUTES`, which
//! plugin.json is checked against too), and a real server answers every documented method and path from a
//! handler, not from the router's "no such route" (404) or "wrong method" (405).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

const KEY: &str = "openapi-test-key";

fn document() -> Value {
    let text = std::fs::read_to_string(common::path("docs/openapi.json")).expect("docs/openapi.json is readable");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"))
}

/// Every operation of the document as `METHOD /path`, with `{param}` written `:param` as in `ROUTES`.
fn operations(doc: &Value) -> BTreeSet<String> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let routed: String = path
            .split('/')
            .map(|seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().expect("a path item is an object") {
            if ["get", "post", "put", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                assert!(op["responses"].is_object(), "{method} {path} has no responses");
                ops.insert(format!("{} {routed}", method.to_uppercase()));
            }
        }
    }
    ops
}

#[test]
fn the_document_names_exactly_the_routes_that_exist() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.0.")), Some(true), "not an OpenAPI 3.0 document");
    let documented = operations(&doc);
    let served: BTreeSet<String> = nself_realtime::transport::http::ROUTES.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty() && extra.is_empty(), "docs/openapi.json: missing {missing:?}, not served {extra:?}");
    // Every `$ref` points at something the document defines.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not a local reference"));
        assert!(doc.pointer(pointer).is_some(), "{r} points at nothing");
    }
}

/// The server under test: the API on (`REALTIME_API_KEY`).
fn start() -> common::Server {
    common::Server::start(&[("REALTIME_API_KEY", KEY)])
}

/// Requests against a server under test.
trait Requests {
    fn request(&self, method: &str, path: &str) -> (u16, String);
}

impl Requests for common::Server {
    /// Sends one request with the API key and a `{}` body for POST and PUT; returns the status and, unless
    /// the answer is a 200 that may be an endless stream, the body.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let body = if matches!(method, "POST" | "PUT") { "{}" } else { "" };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no status line: {line:?}"));
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut text = String::new();
        if status != 200 || path == "/openapi.json" {
            r.read_to_string(&mut text).unwrap();
        }
        (status, text)
    }
}

/// True when the router itself refused the request: a wrong method, the empty 404 of an unknown path, or
/// the API's "no such API route". A handler's 404 (`ROOM_NOT_FOUND`, `NOT_FOUND` of a socket) is an answer.
fn unrouted(status: u16, body: &str) -> bool {
    status == 405 || (status == 404 && (body.is_empty() || body.contains("no such API route")))
}

#[test]
fn the_server_answers_every_documented_route_and_serves_the_document() {
    let server = start();
    let doc = document();
    for op in operations(&doc) {
        let (method, path) = op.split_once(' ').unwrap();
        // Path parameters get a plain value: a name or id that exists nowhere, which handlers answer.
        let concrete: String =
            path.split('/').map(|seg| if seg.starts_with(':') { "x" } else { seg }).collect::<Vec<_>>().join("/");
        let (status, body) = server.request(method, &concrete);
        assert!(!unrouted(status, &body), "{method} {concrete} is documented but not routed: {status} {body}");
        assert!(status < 500, "{method} {concrete}: {status} {body}");
    }
    // The probe can tell: an undocumented path and a wrong method are refused by the router.
    let (status, body) = server.request("GET", "/api/no-such-route");
    assert!(unrouted(status, &body), "{status} {body}");
    let (status, body) = server.request("POST", "/health");
    assert!(unrouted(status, &body), "{status} {body}");
    let (status, body) = server.request("GET", "/no-such-page");
    assert!(unrouted(status, &body), "{status} {body}");

    let (status, served) = server.request("GET", "/openapi.json");
    assert_eq!(status, 200);
    let on_disk = std::fs::read_to_string(common::path("docs/openapi.json")).unwrap();
    assert_eq!(served, on_disk, "GET /openapi.json is not docs/openapi.json");
}
