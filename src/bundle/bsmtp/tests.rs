use super::*;

fn read_all(batch: &[u8]) -> (Vec<Transaction>, Vec<Fault>) {
    let mut got = Vec::new();
    let faults = read(&mut &batch[..], 1 << 20, &mut |t| {
        got.push(t);
        Ok(())
    })
    .unwrap();
    (got, faults)
}

#[test]
fn what_the_writer_writes_the_reader_reads_back_byte_for_byte() {
    let mut w = Writer::new(Vec::new());
    let content = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
    let at = |a: &str| Mailbox::parse(a).unwrap();
    let sender = ReversePath::parse("a@x.example").unwrap();
    w.add(&sender, &[&at("b@y.example"), &at("c@y.example")], content)
        .unwrap();
    w.add(
        &ReversePath::Null,
        &[&at("d@y.example")],
        b"Subject: bounce\r\n\r\nx\r\n",
    )
    .unwrap();
    let batch = w.finish().unwrap();
    let text = String::from_utf8(batch.clone()).unwrap();
    assert!(text.starts_with("MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\n"));
    assert!(
        text.contains("\n..leading dot\n...two\n..\nend\n.\n"),
        "{text}"
    );
    assert!(!text.contains('\r'), "LF lines, as Exim writes them");
    let (got, faults) = read_all(&batch);
    assert!(faults.is_empty(), "{faults:?}");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].content, content);
    assert_eq!(got[0].recipients.len(), 2);
    assert_eq!(got[1].sender, ReversePath::Null);
}

#[test]
fn esmtp_parameters_are_read_when_a_writer_sends_them() {
    let batch = b"EHLO station.example\r\nMAIL FROM:<a@x.example> RET=HDRS ENVID=e+2B1\r\n\
        RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.example\r\n\
        DATA\r\nSubject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    let (got, faults) = read_all(batch);
    assert!(faults.is_empty(), "{faults:?}");
    assert_eq!(got[0].ret, Some(Ret::Hdrs));
    assert_eq!(got[0].envid.as_deref(), Some("e+1"));
    assert_eq!(
        got[0].recipients[0].notify,
        Notify::parse("SUCCESS,FAILURE")
    );
    assert_eq!(
        got[0].recipients[0].orcpt.as_deref(),
        Some("rfc822;b@y.example")
    );
}

#[test]
fn a_bad_transaction_is_reported_and_the_next_one_still_goes() {
    let batch = b"MAIL FROM:<a@x.example>\nRCPT TO:<not an address>\nDATA\nSubject: lost\n\nx\n.\n\
        RCPT TO:<b@y.example>\n\
        MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\nSubject: kept\n\nx\n.\n\
        MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\nSubject: cut\n";
    let (got, faults) = read_all(batch);
    assert_eq!(got.len(), 1);
    assert!(got[0].content.starts_with(b"Subject: kept"));
    let lines: Vec<usize> = faults.iter().map(|f| f.line).collect();
    assert_eq!(lines, [2, 3, 8, 16], "{faults:?}");
    assert!(faults[3].message.contains("ends inside a message"));
}

#[test]
fn a_message_over_the_size_limit_is_refused_and_reading_goes_on() {
    let mut batch = b"MAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\n".to_vec();
    for _ in 0..100 {
        batch.extend_from_slice(&[b'x'; 99]);
        batch.push(b'\n');
    }
    batch.extend_from_slice(b".\nMAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\nok\n.\n");
    let mut got = Vec::new();
    let faults = read(&mut &batch[..], 5000, &mut |t| {
        got.push(t);
        Ok(())
    })
    .unwrap();
    assert_eq!(got.len(), 1);
    assert!(faults[0].message.contains("larger than 5000"), "{faults:?}");
}
