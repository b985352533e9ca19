//! A small DNS client: asks one server for a name's A or AAAA addresses over UDP (TCP when the
//! reply is truncated). `vantage drill` uses it to see what each server really answers.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::config::RecordKind;

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response code, e.g. `NOERROR`, `SERVFAIL`.
    pub rcode: String,
    /// The A/AAAA addresses of the answer section, sorted.
    pub addresses: Vec<IpAddr>,
}

impl Reply {
    pub fn is_noerror(&self) -> bool {
        self.rcode == "NOERROR"
    }
}

/// Asks `server` for the `kind` addresses of `name`; an error names what went wrong.
pub async fn addresses(
    server: SocketAddr,
    name: &str,
    kind: RecordKind,
    timeout: Duration,
) -> Result<Reply, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("{name:?}: {e}"))?;
    let rtype = match kind {
        RecordKind::A => RecordType::A,
        RecordKind::Aaaa => RecordType::AAAA,
    };
    let id: u16 = rand::random();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name, rtype));
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let exchange = async {
        let mut reply = udp(server, &bytes).await?;
        while reply.metadata.id != id {
            reply = udp(server, &bytes).await?;
        }
        if reply.metadata.truncation {
            reply = tcp(server, &bytes).await?;
        }
        Ok::<_, String>(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no reply from {server} within {timeout:?}"))??;
    Ok(Reply {
        rcode: super::server::rcode_name(u16::from(reply.metadata.response_code)).to_string(),
        addresses: answer_addresses(&reply),
    })
}

/// The A/AAAA addresses in a message's answer section, sorted, each once.
pub fn answer_addresses(message: &Message) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

async fn udp(server: SocketAddr, bytes: &[u8]) -> Result<Message, String> {
    let local: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    socket
        .send_to(bytes, server)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    let (n, _) = socket
        .recv_from(&mut buf)
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    Message::from_vec(&buf[..n]).map_err(|e| format!("{server}: undecodable reply: {e}"))
}

async fn tcp(server: SocketAddr, bytes: &[u8]) -> Result<Message, String> {
    let io = |e: std::io::Error| format!("{server} (TCP): {e}");
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    stream.write_all(&len.to_be_bytes()).await.map_err(io)?;
    stream.write_all(bytes).await.map_err(io)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await.map_err(io)?;
    Message::from_vec(&reply).map_err(|e| format!("{server} (TCP): undecodable reply: {e}"))
}
