//! The gates over time, with tokio's clock paused: online time accrues only while a
//! gate is open and its link up, a jump of the clock ages nothing past the cap, modes
//! close and open gates, an opening is announced to the link task, and a flush naming a
//! domain opens the gate for that domain only.

use std::time::Duration;

use super::*;

fn link(mode: &str) -> (LinkMonitor, Receivers) {
    let text = format!(
        "spool = \"/s\"\n[upstream]\nsmarthost = \"hub.example:25\"\ntls = \"none\"\n[link]\nmode = \"{mode}\"\n"
    );
    let config = crate::config::parse(&text, std::path::Path::new("/etc/f.toml")).unwrap();
    let router = Router::from_config(&config);
    LinkMonitor::new(&config.link, &router, jiff::tz::TimeZone::UTC)
}

fn opened(rx: &mut Receivers) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.events.try_recv() {
        if let Event::Opened { route } = e {
            out.push(route);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn online_time_counts_only_while_the_link_is_up() {
    let (link, _rx) = link("auto");
    tokio::time::advance(Duration::from_secs(500)).await;
    assert!(
        link.take_online_time(Duration::from_secs(600)).is_empty(),
        "unknown is not online"
    );
    link.observe("upstream", Evidence::Reached("probe".into()));
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(
        link.take_online_time(Duration::from_secs(600)),
        [("upstream".to_owned(), 120)]
    );
    link.observe("upstream", Evidence::Unreachable("refused".into()));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        link.take_online_time(Duration::from_secs(600)).is_empty(),
        "offline time is never counted"
    );
    link.observe("upstream", Evidence::Reached("probe".into()));
    tokio::time::advance(Duration::from_secs(7 * 86400)).await;
    assert_eq!(
        link.take_online_time(Duration::from_secs(120)),
        [("upstream".to_owned(), 120)],
        "one call never ages more than the cap"
    );
    assert!(link.take_online_time(Duration::from_secs(120)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failure_closes_the_gate_and_a_probe_opens_it() {
    let (link, mut rx) = link("auto");
    let mut first = opened(&mut rx);
    first.sort();
    assert_eq!(first, ["upstream"], "auto mode starts open");
    assert_eq!(link.permit("upstream"), Permit::Open, "unknown: try");
    link.observe(
        "upstream",
        Evidence::Unreachable("connecting: refused".into()),
    );
    let Permit::Closed { reason, .. } = link.permit("upstream") else {
        panic!("still open after a connect failure")
    };
    assert!(reason.contains("refused"), "{reason}");
    assert!(opened(&mut rx).is_empty());
    link.observe("upstream", Evidence::Reached("probe reached".into()));
    assert_eq!(link.permit("upstream"), Permit::Open);
    assert_eq!(opened(&mut rx), ["upstream"], "the opening is announced");
    let status = link.status();
    let up = status.iter().find(|r| r.route == "upstream").unwrap();
    assert_eq!((up.state, up.open), (LinkState::Up, true));
}

#[tokio::test(start_paused = true)]
async fn manual_mode_opens_for_a_flush_until_the_route_drains() {
    let (link, mut rx) = link("manual");
    let _ = opened(&mut rx);
    assert!(matches!(link.permit("upstream"), Permit::Closed { .. }));
    assert!(
        link.to_probe(true, true).is_empty(),
        "manual mode does not probe"
    );
    assert!(
        !link.flush(None, "ferrymail flush", None),
        "no run was going"
    );
    assert_eq!(link.permit("upstream"), Permit::Open);
    assert!(opened(&mut rx).contains(&"upstream".to_owned()));
    assert!(
        link.flush(None, "again", None),
        "coalesced with the run going"
    );
    let mut runs = Vec::new();
    while let Ok(n) = rx.news.try_recv() {
        runs.push(n);
    }
    assert!(
        runs.contains(&News::Run {
            route: "upstream".into()
        }),
        "the queue owner hears of the run: {runs:?}"
    );
    assert_eq!(link.runs(), ["upstream"]);
    link.end_run("upstream");
    assert!(matches!(link.permit("upstream"), Permit::Closed { .. }));
    assert_eq!(link.last_flush().unwrap().result, "drained");
}

#[tokio::test(start_paused = true)]
async fn a_domain_flush_opens_a_manual_gate_for_that_domain_only() {
    let (link, _rx) = link("manual");
    link.flush(
        Some("upstream"),
        "ferrymail flush --domain a.test",
        Some(("a.test".into(), false)),
    );
    assert_eq!(
        link.permit("upstream"),
        Permit::Only(vec![("a.test".into(), false)])
    );
    link.flush(None, "ferrymail flush", None);
    assert_eq!(link.permit("upstream"), Permit::Open, "a whole flush joins");
    let (auto, _rx) = self::link("auto");
    auto.flush(Some("upstream"), "ETRN", Some(("a.test".into(), true)));
    assert_eq!(
        auto.permit("upstream"),
        Permit::Open,
        "auto mode sends everything"
    );
}
