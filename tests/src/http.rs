//! Plain HTTP GETs against the servers under test (tcpstate serve,
//! Prometheus's API).

/// One response: status, `Content-Type`, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET url`; a connection failure is an error, an HTTP error status is a
/// response.
pub fn get(url: &str) -> Result<Response, String> {
    request(url, None, &[])
}

/// [`get`] with an `Accept` header (if any) and `query` parameters.
pub fn request(
    url: &str,
    accept: Option<&str>,
    query: &[(&str, &str)],
) -> Result<Response, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent.get(url).query_pairs(query.iter().copied());
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok(Response {
        status,
        content_type,
        body,
    })
}

/// A free TCP port on loopback (free when asked: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
