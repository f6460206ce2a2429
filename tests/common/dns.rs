//! A real DNS server inside the test (hickory-server on a loopback UDP and TCP port),
//! serving one zone from memory, and the root zone beside it (NS records for both), so
//! a resolver pointed at it can vouch for itself. Names under `broken.` in it answer
//! SERVFAIL and names under `silent.` never answer, so a test can see how delivery
//! meets a failing or an unreachable resolver. `Lies` makes the whole server lie, as
//! offline resolvers and captive portals do, until the test tells it to stop.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, MX, NS, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

/// What the zone holds.
pub enum Rr {
    Mx(&'static str, u16, &'static str),
    A(&'static str, Ipv4Addr),
}

/// How the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Lie {
    /// The truth, from its zones.
    None = 0,
    /// NXDOMAIN for every name (an offline LAN resolver).
    NxDomain = 1,
    /// A name that does not exist has the address 10.255.0.1 (NXDOMAIN rewriting, as
    /// captive portals and some ISPs do); the rest is true.
    Hijack = 2,
}

/// Switches the server's lies.
#[derive(Clone)]
pub struct Lies(Arc<AtomicU8>);

impl Lies {
    pub fn set(&self, lie: Lie) {
        self.0.store(lie as u8, Ordering::Relaxed);
    }
}

struct Scripted {
    catalog: Catalog,
    lie: Arc<AtomicU8>,
    /// The names the zones hold.
    known: std::collections::HashSet<String>,
}

#[async_trait::async_trait]
impl RequestHandler for Scripted {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let name = request
            .request_info()
            .map(|i| i.query.name().to_string())
            .unwrap_or_default();
        if name.split('.').any(|l| l == "silent") {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let lie = self.lie.load(Ordering::Relaxed);
        if lie == Lie::NxDomain as u8 {
            let msg = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::NXDomain);
            return response.send_response(msg).await.expect("listening");
        }
        if lie == Lie::Hijack as u8 && !self.known.contains(&name.to_ascii_lowercase()) {
            let query = request.request_info().expect("a query").query;
            let record = Record::from_rdata(
                Name::from(query.name().clone()),
                60,
                RData::A(A(Ipv4Addr::new(10, 255, 0, 1))),
            );
            let answers = [record];
            let msg = MessageResponseBuilder::new(&request.queries, None).build(
                hickory_server::proto::op::Metadata::response_from_request(&request.metadata),
                answers.iter(),
                [],
                [],
                [],
            );
            return response.send_response(msg).await.expect("listening");
        }
        if name.split('.').any(|l| l == "broken") {
            let msg = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return response
                .send_response(msg)
                .await
                .expect("the test's resolver is listening");
        }
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

/// A DNS server for `origin` (e.g. `"test."`) holding `records`, on its own runtime
/// thread for the test's lifetime. Returns its address.
pub fn serve(origin: &'static str, records: Vec<Rr>) -> SocketAddr {
    serve_lying(origin, records).0
}

/// `serve`, with the switch that makes it lie.
pub fn serve_lying(origin: &'static str, records: Vec<Rr>) -> (SocketAddr, Lies) {
    let lie = Arc::new(AtomicU8::new(Lie::None as u8));
    let lies = Lies(lie.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let zone = Name::from_ascii(origin).unwrap();
            let mut handler: InMemoryZoneHandler<TokioRuntimeProvider> =
                InMemoryZoneHandler::empty(zone.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let soa = SOA::new(
                Name::from_ascii(format!("ns.{origin}")).unwrap(),
                Name::from_ascii(format!("hostmaster.{origin}")).unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            );
            handler.upsert_mut(
                Record::from_rdata(zone.clone(), 60, RData::SOA(soa.clone())),
                1,
            );
            let ns = Name::from_ascii(format!("ns.{origin}")).unwrap();
            handler.upsert_mut(
                Record::from_rdata(zone.clone(), 60, RData::NS(NS(ns.clone()))),
                1,
            );
            let mut known: std::collections::HashSet<String> =
                [origin.to_owned(), ".".to_owned()].into();
            for rr in records {
                known.insert(match &rr {
                    Rr::Mx(name, ..) | Rr::A(name, _) => name.to_string(),
                });
                let record = match rr {
                    Rr::Mx(name, preference, exchange) => Record::from_rdata(
                        Name::from_ascii(name).unwrap(),
                        60,
                        RData::MX(MX::new(preference, Name::from_ascii(exchange).unwrap())),
                    ),
                    Rr::A(name, ip) => {
                        Record::from_rdata(Name::from_ascii(name).unwrap(), 60, RData::A(A(ip)))
                    }
                };
                handler.upsert_mut(record, 1);
            }
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::new(&zone), vec![Arc::new(handler)]);
            let root = Name::root();
            let mut roots: InMemoryZoneHandler<TokioRuntimeProvider> =
                InMemoryZoneHandler::empty(root.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            roots.upsert_mut(Record::from_rdata(root.clone(), 60, RData::SOA(soa)), 1);
            roots.upsert_mut(Record::from_rdata(root.clone(), 60, RData::NS(NS(ns))), 1);
            catalog.upsert(LowerName::new(&root), vec![Arc::new(roots)]);
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
            let mut server = Server::new(Scripted {
                catalog,
                lie,
                known,
            });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64 << 10);
            tx.send(addr).unwrap();
            let _ = server.block_until_done().await;
        });
    });
    (rx.recv().unwrap(), lies)
}
