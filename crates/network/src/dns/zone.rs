//! The `.vm` zone: one DNS query in, one answer out (or nothing). Pure:
//! the caller owns the socket and the record table.
//!
//! The wire format is `hickory-proto`'s; nothing here parses bytes by hand.
//! The server is authoritative for `vm.` and nothing else: it is not a
//! recursive resolver, so a name outside the zone gets REFUSED (a stub
//! resolver such as glibc's then asks its next nameserver).

use std::net::Ipv4Addr;

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The zone's name, without dots: VMs are `<name>.vm`.
pub const ZONE: &str = "vm";
/// The largest query answered; anything longer is dropped unread. A real
/// query is a header, one name (at most 255 bytes) and an EDNS record;
/// padded queries (RFC 8467) stay under 468 bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// TTL of answers, and of NXDOMAIN through the SOA: VMs come and go, so
/// resolvers must not remember them for long.
pub const TTL: u32 = 5;

/// A name the zone always answers, with [`PROBE_ADDR`], so that `banger
/// doctor` can tell whether the host's resolver reaches bangerd without
/// knowing a VM. VMs are `<label>.vm`: no VM can have a three-label name.
pub const PROBE_NAME: &str = "probe.banger.vm";
/// The probe's answer: from TEST-NET-1 (RFC 5737), never a real host.
pub const PROBE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back to the sender.
    Send(Vec<u8>),
    /// Send nothing (why, for the debug log): a response rather than a
    /// query (answering would let two servers bounce packets forever),
    /// something too short to carry an id, or too long.
    Drop(&'static str),
}

/// Answers `query` from `lookup`, which maps a lowercase VM name (one
/// label, without `.vm`) to its address.
pub fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Ipv4Addr>) -> Reply {
    if query.len() > MAX_QUERY_BYTES {
        return Reply::Drop("oversized query");
    }
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            // A header we can read gets FORMERR with its id; less is noise.
            let mut decoder = BinDecoder::new(query);
            return match Header::read(&mut decoder) {
                Ok(h) if h.message_type() == MessageType::Query => encode(&Message::error_msg(
                    h.id(),
                    h.op_code(),
                    ResponseCode::FormErr,
                )),
                Ok(_) => Reply::Drop("malformed response"),
                Err(_) => Reply::Drop("too short for a DNS header"),
            };
        }
    };
    if request.message_type() != MessageType::Query {
        return Reply::Drop("a response, not a query");
    }
    let mut response = Message::error_msg(request.id(), request.op_code(), ResponseCode::NoError);
    response.set_recursion_desired(request.recursion_desired());
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return encode(&response);
    }
    let [question] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return encode(&response);
    };
    response.add_query(question.clone());
    let zone = zone_name();
    let name = question.name().to_lowercase();
    if question.query_class() != DNSClass::IN || !zone.zone_of(&name) {
        response.set_response_code(ResponseCode::Refused);
        return encode(&response);
    }
    response.set_authoritative(true);
    let label = (name.num_labels() == 2)
        .then(|| name.iter().next())
        .flatten()
        .and_then(|l| std::str::from_utf8(l).ok());
    let probe = name.to_ascii().trim_end_matches('.') == PROBE_NAME;
    let address = if probe {
        Some(PROBE_ADDR)
    } else {
        label.and_then(&lookup)
    };
    match (address, question.query_type()) {
        (Some(ip), RecordType::A | RecordType::ANY) => {
            response.add_answer(Record::from_rdata(
                question.name().clone(),
                TTL,
                RData::A(A(ip)),
            ));
        }
        // The name exists, without records of this type: NODATA.
        (Some(_), _) => {
            response.add_name_server(soa_record());
        }
        // The apex exists (it has the SOA) but has no address.
        (None, RecordType::SOA) if name == zone => {
            response.add_answer(soa_record());
        }
        (None, _) if name == zone => {
            response.add_name_server(soa_record());
        }
        (None, _) => {
            response.set_response_code(ResponseCode::NXDomain);
            response.add_name_server(soa_record());
        }
    }
    encode(&response)
}

fn zone_name() -> Name {
    Name::from_labels([ZONE]).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA: in the authority section of negative answers, its
/// minimum caps how long a resolver remembers that a name is absent.
fn soa_record() -> Record {
    let zone = zone_name();
    let host = |label: &str| Name::from_labels([label, ZONE]).unwrap_or_else(|_| zone.clone());
    Record::from_rdata(
        zone.clone(),
        TTL,
        RData::SOA(SOA::new(
            host("bangerd"),
            host("hostmaster"),
            1,
            60,
            60,
            60,
            TTL,
        )),
    )
}

fn encode(message: &Message) -> Reply {
    match message.to_vec() {
        Ok(bytes) => Reply::Send(bytes),
        Err(_) => Reply::Drop("cannot encode the answer"),
    }
}

/// A query for `name` (`A`), for probes and tests.
pub fn query_bytes(id: u16, name: &str, kind: RecordType) -> Option<Vec<u8>> {
    let name = Name::from_ascii(name).ok()?;
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(hickory_proto::op::Query::query(name, kind));
    message.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Option<Ipv4Addr> {
        (name == "web").then_some(Ipv4Addr::new(172, 16, 0, 5))
    }

    fn ask(name: &str, kind: RecordType) -> Message {
        let query = query_bytes(0x1234, name, kind).unwrap();
        match answer(&query, table) {
            Reply::Send(bytes) => Message::from_vec(&bytes).unwrap(),
            Reply::Drop(why) => panic!("dropped: {why}"),
        }
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_running_vm_has_an_address_in_any_case() {
        for name in ["web.vm.", "web.vm", "WEB.Vm."] {
            let m = ask(name, RecordType::A);
            assert_eq!(m.id(), 0x1234);
            assert_eq!(m.message_type(), MessageType::Response);
            assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
            assert!(m.authoritative());
            assert!(!m.recursion_available());
            assert_eq!(addresses(&m), [Ipv4Addr::new(172, 16, 0, 5)], "{name}");
            assert_eq!(m.answers()[0].ttl(), TTL);
            assert_eq!(m.queries().len(), 1, "the question is echoed");
        }
    }

    #[test]
    fn other_types_of_a_known_name_are_nodata() {
        let m = ask("web.vm.", RecordType::AAAA);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn unknown_names_in_the_zone_are_nxdomain() {
        for name in ["db.vm.", "a.web.vm.", "x-y-z.vm."] {
            let m = ask(name, RecordType::A);
            assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
            assert!(m.authoritative());
            assert!(m.answers().is_empty());
            assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
        }
        let probe = ask("Probe.Banger.VM.", RecordType::A);
        assert_eq!(addresses(&probe), [PROBE_ADDR]);
        let apex = ask("vm.", RecordType::A);
        assert_eq!(apex.response_code(), ResponseCode::NoError);
        assert!(apex.answers().is_empty());
        let soa = ask("vm.", RecordType::SOA);
        assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn names_outside_the_zone_are_refused() {
        for name in ["example.com.", "vm.example.com.", "web.vmx.", "."] {
            let m = ask(name, RecordType::A);
            assert_eq!(m.response_code(), ResponseCode::Refused, "{name}");
            assert!(!m.authoritative());
            assert!(m.answers().is_empty());
        }
    }

    #[test]
    fn malformed_input_gets_formerr_or_nothing() {
        let good = query_bytes(7, "web.vm.", RecordType::A).unwrap();
        // Cut inside the question: FORMERR, same id.
        let cut = &good[..good.len() - 3];
        match answer(cut, table) {
            Reply::Send(b) => {
                let m = Message::from_vec(&b).unwrap();
                assert_eq!(m.id(), 7);
                assert_eq!(m.response_code(), ResponseCode::FormErr);
            }
            Reply::Drop(why) => panic!("dropped: {why}"),
        }
        assert!(matches!(answer(&[], table), Reply::Drop(_)));
        assert!(matches!(answer(&[1, 2, 3], table), Reply::Drop(_)));
        assert!(matches!(
            answer(&vec![0u8; MAX_QUERY_BYTES + 1], table),
            Reply::Drop("oversized query")
        ));
        // A response is never answered (no loops between servers).
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(matches!(answer(&response, table), Reply::Drop(_)));
        // Every single-byte corruption of a good query is survived.
        for i in 0..good.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = answer(&bad, table);
            }
        }
    }

    #[test]
    fn other_opcodes_and_question_counts() {
        let mut m = Message::from_vec(&query_bytes(9, "web.vm.", RecordType::A).unwrap()).unwrap();
        m.set_op_code(OpCode::Update);
        let Reply::Send(b) = answer(&m.to_vec().unwrap(), table) else {
            panic!("no answer")
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::NotImp
        );
        let mut two =
            Message::from_vec(&query_bytes(9, "web.vm.", RecordType::A).unwrap()).unwrap();
        two.set_op_code(OpCode::Query);
        let q = two.queries()[0].clone();
        two.add_query(q);
        let Reply::Send(b) = answer(&two.to_vec().unwrap(), table) else {
            panic!("no answer")
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::FormErr
        );
        let mut none = Message::new();
        none.set_id(3);
        let Reply::Send(b) = answer(&none.to_vec().unwrap(), table) else {
            panic!("no answer")
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::FormErr
        );
    }
}
