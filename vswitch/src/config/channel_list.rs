//! The channels an uplink carries, as written (`100+200-299` in a flag, where `,` separates the
//! keys; `[100, "200-299"]` or the same text in a file) and as shown (`ctl ports`).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use vswitch_channels::{ChannelId, ChannelSet};

use super::error::{truncate, ConfigError, Origin};
use super::raw::RawNumber;

/// Joins the items of a channel list in a flag (`,` separates the keys of a spec).
pub const SEPARATOR: char = '+';

/// A channel list as written: text (`"100+200-299"`) or a list of numbers and ranges
/// (`[100, "200-299"]`).
#[derive(Debug, Clone, PartialEq)]
pub enum RawChannels {
    /// Items joined by [`SEPARATOR`].
    Text(String),
    /// One item per element.
    List(Vec<RawNumber>),
}

impl<'de> Deserialize<'de> for RawChannels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawChannels, D::Error> {
        d.deserialize_any(ChannelsVisitor)
    }
}

struct ChannelsVisitor;

impl<'de> serde::de::Visitor<'de> for ChannelsVisitor {
    type Value = RawChannels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a list of channels and ranges, e.g. [100, \"200-299\"], or text \"100+200-299\"",
        )
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawChannels, E> {
        Ok(RawChannels::Text(v.to_owned()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawChannels, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<RawNumber>()? {
            items.push(item);
        }
        Ok(RawChannels::List(items))
    }
}

/// Every channel, 1..=4094: what an uplink carries when no list is given.
pub fn all() -> ChannelSet {
    (1..=ChannelId::MAX.get())
        .filter_map(|v| ChannelId::new(v).ok())
        .collect()
}

/// Validates a channel list: every item a channel or a range `A-B` (A <= B) of channels, no
/// channel twice, at least one channel.
pub fn parse(raw: &RawChannels, at: &Origin) -> Result<ChannelSet, ConfigError> {
    let bad = |detail: String| ConfigError::UplinkChannels {
        at: at.clone(),
        detail,
    };
    let items: Vec<String> = match raw {
        RawChannels::Text(t) if t.trim().is_empty() => return Err(bad("the list is empty".into())),
        RawChannels::Text(t) => t.split(SEPARATOR).map(str::to_owned).collect(),
        RawChannels::List(v) => v
            .iter()
            .map(|n| match n {
                RawNumber::Float(_) => Err(bad(format!("{n} is not a whole S-VID"))),
                _ => Ok(n.as_text()),
            })
            .collect::<Result<_, _>>()?,
    };
    if items.is_empty() {
        return Err(bad("the list is empty".into()));
    }
    let mut set = ChannelSet::new();
    for (i, item) in items.iter().enumerate() {
        let (lo, hi) = range(item.trim())
            .map_err(|why| bad(format!("item #{} {:?} {why}", i + 1, truncate(item.trim()))))?;
        for v in lo.get()..=hi.get() {
            let c = ChannelId::new(v).map_err(|e| bad(e.to_string()))?;
            if !set.insert(c) {
                return Err(bad(format!(
                    "channel {c} is listed twice (item #{})",
                    i + 1
                )));
            }
        }
    }
    Ok(set)
}

/// One item: `A` or `A-B`.
fn range(item: &str) -> Result<(ChannelId, ChannelId), String> {
    if item.is_empty() {
        return Err("is empty".into());
    }
    // `4000-4094` is the longest item there is; a longer one is not worth quoting twice.
    if item.len() > 16 {
        return Err("is not a channel or a range A-B".into());
    }
    let id = |s: &str| ChannelId::from_str(s.trim()).map_err(|e| format!("is not valid: {e}"));
    match item.split_once('-') {
        // `-5` is a negative number, not a range from nothing.
        Some((lo, hi)) if !lo.trim().is_empty() => {
            let (lo, hi) = (id(lo)?, id(hi)?);
            if lo > hi {
                return Err(format!(
                    "runs backwards; write the lower channel first ({hi}-{lo})"
                ));
            }
            Ok((lo, hi))
        }
        _ => {
            let c = id(item)?;
            Ok((c, c))
        }
    }
}

/// `set` in the flag syntax, ranges compressed: `1-4094`, `100+200-299`.
pub fn ranges(set: &ChannelSet) -> String {
    let mut out = String::new();
    let mut run: Option<(u16, u16)> = None;
    let push = |out: &mut String, (lo, hi): (u16, u16)| {
        if !out.is_empty() {
            out.push(SEPARATOR);
        }
        if lo == hi {
            out.push_str(&lo.to_string());
        } else {
            out.push_str(&format!("{lo}-{hi}"));
        }
    };
    for c in set.iter().map(ChannelId::get) {
        run = match run {
            Some((lo, hi)) if c == hi + 1 => Some((lo, c)),
            Some(done) => {
                push(&mut out, done);
                Some((c, c))
            }
            None => Some((c, c)),
        };
    }
    if let Some(done) = run {
        push(&mut out, done);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Result<ChannelSet, ConfigError> {
        parse(&RawChannels::Text(t.into()), &Origin::Option("--uplink"))
    }

    #[test]
    fn items_and_ranges_round_trip_compressed() {
        let s = text("300+100-102+7").expect("valid");
        assert_eq!(ranges(&s), "7+100-102+300");
        assert_eq!(ranges(&all()), "1-4094");
        assert_eq!(ranges(&ChannelSet::new()), "");
        let s = text(" 5 - 6 + 4094").expect("spaces around items are fine");
        assert_eq!(ranges(&s), "5-6+4094");
        let list = RawChannels::List(vec![RawNumber::Int(9), RawNumber::Text("1-2".into())]);
        let s = parse(&list, &Origin::Option("x")).expect("valid");
        assert_eq!(ranges(&s), "1-2+9");
    }

    #[test]
    fn bad_lists_say_which_item() {
        for (t, want) in [
            ("", "empty"),
            ("100++200", "item #2 \"\" is empty"),
            ("0", "channel id 0"),
            ("4095", "4095 is reserved"),
            ("1-5000", "out of range"),
            (
                "200-100",
                "runs backwards; write the lower channel first (100-200)",
            ),
            ("-5", "not valid"),
            ("blue", "not a decimal number"),
            ("100+50-150", "channel 100 is listed twice"),
        ] {
            let e = text(t).expect_err(t).to_string();
            assert!(e.contains(want), "{t:?}: {e}");
            assert!(e.contains("joined by '+'"), "{e}");
        }
        let list = RawChannels::List(vec![]);
        assert!(parse(&list, &Origin::Option("x")).is_err());
        let list = RawChannels::List(vec![RawNumber::Float(1.5)]);
        assert!(parse(&list, &Origin::Option("x")).is_err());
    }
}
