use super::*;

#[test]
fn end_record_round_trips() {
    for t in [
        Trailer {
            size: 0,
            eight_bit: false,
            checksum: Some(0),
            prepended: false,
        },
        Trailer {
            size: u64::MAX,
            eight_bit: true,
            checksum: Some(u32::MAX),
            prepended: true,
        },
    ] {
        assert_eq!(Trailer::parse(&t.end_record()), Some(t));
    }
    assert_eq!(Trailer::parse(b"ferrymail-end 00000000000000zz 00\n"), None);
    let v1 = Trailer::parse(b"ferrymail-end 0000000000000010 01\n").unwrap();
    assert_eq!((v1.size, v1.eight_bit, v1.checksum), (16, true, None));
}

/// Envelope lines as earlier versions wrote them, when addresses, NOTIFY and the
/// origin's kind were plain text: they read into the typed envelope and are written
/// back byte for byte.
#[test]
fn envelopes_written_before_the_types_still_read() {
    for line in [
        r#"{"id":"0G7T2KQ3B000000A","received_at":1800000000,"sender":"alice@edge.example","recipients":[{"address":"bob@hub.example","notify":"SUCCESS,DELAY","orcpt":"rfc822;bob@hub.example"},{"address":"\"john doe\"@[192.0.2.1]"}],"body":"8bitmime","smtputf8":true,"envid":"QQ314159","ret":"hdrs","origin":{"kind":"smtp","client":"192.0.2.9","helo":"edge","auth":"alice"}}"#,
        r#"{"id":"0G7T2KQ3B000000B","received_at":1800000001,"sender":"","recipients":[{"address":"root@laptop.example","notify":"NEVER"}],"smtputf8":false,"origin":{"kind":"double-bounce","about":{"id":"0G7T2KQ3B000000A","failed":[0,1]}}}"#,
        r#"{"id":"0G7T2KQ3B000000C","received_at":1800000002,"sender":"pelé@exemple.fr","recipients":[{"address":"b@y.example"}],"smtputf8":true,"origin":{"kind":"bundle","bundle":{"node":"edge","bundle":"0G7T2KQ3B000000Z","message":"0G7T2KQ3B000000Y","positions":[2]}}}"#,
        r#"{"id":"0G7T2KQ3B000000D","received_at":1800000003,"sender":"cron@laptop","recipients":[{"address":"me@example.org"}],"smtputf8":false,"origin":{"kind":"local","uid":1000,"drop":"1800000003.1.P1.R1"}}"#,
    ] {
        let envelope: Envelope = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&envelope).unwrap(), line);
    }
    let e: Envelope = serde_json::from_str(
        r#"{"id":"0G7T2KQ3B000000E","received_at":1,"sender":"","recipients":[{"address":"a@b.example"}],"origin":{"kind":"dsn"}}"#,
    )
    .unwrap();
    assert!(e.sender.is_null());
    assert_eq!(e.origin.kind, OriginKind::Dsn);
    for bad in [
        r#""sender":"a b@x.example","recipients":[{"address":"a@b.example"}],"origin":{"kind":"dsn"}"#,
        r#""sender":"","recipients":[{"address":"a@b\r\nRCPT TO:<x>"}],"origin":{"kind":"dsn"}"#,
        r#""sender":"","recipients":[{"address":"a@b.example","notify":"SOMETIMES"}],"origin":{"kind":"dsn"}"#,
        r#""sender":"","recipients":[{"address":"a@b.example"}],"origin":{"kind":"carrier-pigeon"}"#,
    ] {
        let line = format!(r#"{{"id":"0G7T2KQ3B000000F","received_at":1,{bad}}}"#);
        assert!(serde_json::from_str::<Envelope>(&line).is_err(), "{bad}");
    }
}

#[test]
fn prepended_fields_come_first_and_are_checked() {
    use crate::spool::draft::Draft;
    let dir = tempfile::tempdir().unwrap();
    let (tmp, path) = (dir.path().join("t"), dir.path().join("m"));
    let fs: std::sync::Arc<dyn Fs> = std::sync::Arc::new(crate::spool::RealFs);
    let envelope = Envelope::new(
        ReversePath::parse("a@b.example").unwrap(),
        vec![Recipient::new(Mailbox::parse("c@d.example").unwrap())],
        Origin::default(),
    );
    let mut draft = Draft::create(fs.clone(), tmp, path.clone(), envelope).unwrap();
    draft.write(b"Subject: s\r\n\r\nbody\r\n").unwrap();
    let mut sealed = draft
        .seal_prepending(b"DKIM-Signature: x\r\n".to_vec())
        .unwrap();
    sealed.keep();
    let stored = read_stored(fs.as_ref(), &path).unwrap();
    assert_eq!(stored.content_size(), 19 + 20);
    assert_eq!(
        read_body(fs.as_ref(), &path, &stored).unwrap(),
        b"DKIM-Signature: x\r\nSubject: s\r\n\r\nbody\r\n"
    );
    // A changed byte in the prepended fields is caught; so is a cut.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(4).position(|w| w == b"DKIM").unwrap();
    bytes[at] = b'd';
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_stored(fs.as_ref(), &path),
        Err(FormatError::Checksum)
    ));
    bytes.remove(at);
    std::fs::write(&path, &bytes).unwrap();
    assert!(read_stored(fs.as_ref(), &path).unwrap_err().is_damage());
}
