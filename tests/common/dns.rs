//! A real DNS server inside the test (hickory-server on a loopback UDP and TCP port),
//! serving one zone from memory. Names under `broken.` in it answer SERVFAIL and names
//! under `silent.` never answer, so a test can see how delivery meets a failing or an
//! unreachable resolver.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, MX, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

/// What the zone holds.
pub enum Rr {
    Mx(&'static str, u16, &'static str),
    A(&'static str, Ipv4Addr),
}

struct Scripted {
    catalog: Catalog,
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
            handler.upsert_mut(Record::from_rdata(zone.clone(), 60, RData::SOA(soa)), 1);
            for rr in records {
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
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
            let mut server = Server::new(Scripted { catalog });
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 64 << 10);
            tx.send(addr).unwrap();
            let _ = server.block_until_done().await;
        });
    });
    rx.recv().unwrap()
}
