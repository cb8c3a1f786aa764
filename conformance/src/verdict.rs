//! Judges the worker's replies to each case against what the protocol asks.

use pipeline::codec::Encoding;
use pipeline::frame::Frame;
use pipeline::wire::{FAILURE_MAGIC, RESULT_MAGIC, RawReply, Task, TileFailure};

use crate::corpus::{Case, Expect};
use crate::observe::Seen;
use crate::tolerance;

/// The job and tile a reply names, read leniently (a wrong key or a bad
/// field elsewhere is judged later, not used to lose the reply).
pub fn reply_ids(payload: &[u8]) -> Option<(String, u32)> {
    if payload.len() < 8 || !(payload.starts_with(RESULT_MAGIC) || payload.starts_with(FAILURE_MAGIC)) {
        return None;
    }
    let len = u32::from_le_bytes(payload[4..8].try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(payload.get(8..8usize.checked_add(len)?)?).ok()?;
    Some((header["job_id"].as_str()?.to_owned(), u32::try_from(header["tile"].as_u64()?).ok()?))
}

/// The replies to `case`'s job and tile, in the order they arrived.
pub fn replies_to<'a>(case: &Case, results: &'a [Seen]) -> Vec<&'a Seen> {
    results
        .iter()
        .filter(|s| reply_ids(&s.payload).is_some_and(|(job, tile)| job == case.job_id && tile == case.tile))
        .collect()
}

/// Whether `case` has been answered (its `nth` sending, from 0, for a task
/// sent more than once), so that its offset may be committed.
pub fn answered(case: &Case, nth: usize, results: &[Seen], dead_letters: &[Seen]) -> bool {
    match case.expect {
        Expect::Result { .. } | Expect::Failure { .. } => replies_to(case, results).len() > nth,
        Expect::DeadLetter => dead_letters.iter().any(|s| s.key.as_deref() == Some(&case.key())),
        Expect::Skipped => true,
    }
}

/// The verdict on `case` given the replies seen: `Ok` with a detail, or what is wrong.
pub fn judge(
    case: &Case,
    nth: usize,
    worker_id: &str,
    results: &[Seen],
    dead_letters: &[Seen],
) -> Result<String, String> {
    match &case.expect {
        Expect::Skipped => match replies_to(case, results).first() {
            None => Ok("skipped".into()),
            Some(_) => {
                Err("answered a task of a job that control said was stopped; skip (and commit) such tasks".into())
            }
        },
        Expect::DeadLetter => {
            let Some(letter) = dead_letters.iter().find(|s| s.key.as_deref() == Some(&case.key())) else {
                return Err("not on the dead-letter topic: a task whose header cannot be read goes there, as it came, with an `error` header".into());
            };
            if letter.payload != case.payload {
                return Err("the dead letter is not the task as it came".into());
            }
            match &letter.error {
                Some(e) if !e.is_empty() => Ok(format!("dead-lettered: {}", cut(e))),
                _ => Err("the dead letter has no `error` header".into()),
            }
        }
        Expect::Failure { attempt } => {
            let reply = nth_reply(case, nth, results)?;
            match RawReply::parse(&reply.payload) {
                Ok(RawReply::Failed(f)) => {
                    if f.attempt != *attempt {
                        Err(format!("the failure says attempt {}, the task said {attempt}: echo it", f.attempt))
                    } else if f.worker_id != worker_id {
                        Err(format!("the failure names worker {:?}, not {worker_id:?}", f.worker_id))
                    } else if f.error.is_empty() {
                        Err("the failure's error is empty: say what went wrong".into())
                    } else {
                        Ok(format!("failure reported: {}", cut(&f.error)))
                    }
                }
                Ok(RawReply::Done(..)) => Err("a result for a task that cannot be processed; report a failure".into()),
                Err(e) => Err(format!("the reply cannot be read: {e}")),
            }
        }
        Expect::Result { reference, tolerance, jpeg_quality } => {
            let reply = nth_reply(case, nth, results)?;
            let (header, pixels) = match RawReply::parse(&reply.payload) {
                Ok(RawReply::Done(header, pixels)) => (header, pixels),
                Ok(RawReply::Failed(f)) => return declined(&f, &case.payload),
                Err(e) => return Err(format!("the result cannot be read: {e}")),
            };
            let task = Task::decode(&case.payload).map_err(|e| format!("the kit's own task is unreadable: {e}"))?;
            if header.rect != task.header.rect {
                return Err(format!("the result's rect is {:?}, the task's {:?}", header.rect, task.header.rect));
            }
            if header.channels != task.header.channels {
                return Err("the result's channels are not the task's".into());
            }
            if header.worker_id != worker_id {
                return Err(format!(
                    "the result names worker {:?}, not {worker_id:?} (TILEPIPE_WORKER_ID)",
                    header.worker_id
                ));
            }
            let (width, height) = (header.rect.width, header.rect.height);
            match header.encoding {
                Encoding::Jpeg => {
                    let Some(quality) = jpeg_quality else {
                        return Err("a JPEG result for a task without jpeg_tile_quality".into());
                    };
                    pipeline::jpeg::check_tile(pixels, (width, height), *quality).map_err(|e| {
                        format!("the master would not splice this JPEG tile ({e}) and would send the task again")
                    })?;
                    let ours = pipeline::jpeg::encode_tile(reference, *quality).expect("the reference encodes");
                    if ours == pixels {
                        return Ok("a JPEG tile, byte for byte the reference's".into());
                    }
                    let decode = |bytes: &[u8]| pipeline::jpeg::decode(bytes, width, height);
                    let got = decode(pixels).map_err(|e| format!("the JPEG tile does not decode: {e}"))?;
                    let expected = decode(&ours).expect("the reference decodes");
                    compare(&got, &expected, tolerance.saturating_add(tolerance::JPEG_RESULT))
                        .map(|d| format!("a JPEG tile, {d}"))
                }
                _ => {
                    let got = header.decode_pixels(pixels).map_err(|e| format!("the result's pixels: {e}"))?;
                    compare(&got, reference, *tolerance)
                        .map(|d| format!("{} result, {d}", encoding_name(header.encoding)))
                }
            }
        }
    }
}

/// A failure to a task the worker should have processed: fine if it says
/// which of the chain's operations it does not implement (a partial worker).
fn declined(failure: &TileFailure, task: &[u8]) -> Result<String, String> {
    let chain = Task::decode(task).map(|t| t.header.ops).unwrap_or_default();
    match &failure.unsupported {
        Some(op) if chain.iter().any(|o| o.name() == op) => Ok(format!("{DECLINED}{op}")),
        Some(op) => Err(format!("declined as unsupported {op:?}, which is not in the chain")),
        None => Err(format!("the worker reported a failure: {}", cut(&failure.error))),
    }
}

/// How a pass that was a decline begins.
pub const DECLINED: &str = "declined: does not implement ";

fn nth_reply<'a>(case: &Case, nth: usize, results: &'a [Seen]) -> Result<&'a Seen, String> {
    let replies = replies_to(case, results);
    let reply = replies.get(nth).ok_or_else(|| match nth {
        0 => "no reply".to_owned(),
        n => format!("{n} replies, and none to this sending: answer every sending of a task"),
    })?;
    match reply.key.as_deref() {
        Some(key) if key == case.key() => Ok(reply),
        other => Err(format!("the reply is keyed {other:?}, not {:?} (<job id>/<tile>)", case.key())),
    }
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Raw => "a raw",
        Encoding::Png => "a PNG",
        Encoding::Jpeg => "a JPEG",
    }
}

/// Compares two frames of one shape sample by sample.
pub fn compare(got: &Frame, expected: &Frame, tolerance: u8) -> Result<String, String> {
    if (got.width, got.height, got.channels) != (expected.width, expected.height, expected.channels) {
        return Err("the result's shape is not the tile's".into());
    }
    let n = expected.channels.count();
    let diffs = got.pixels.iter().zip(&expected.pixels).map(|(&a, &b)| a.abs_diff(b));
    let worst = diffs.clone().max().unwrap_or(0);
    let over = diffs.clone().filter(|&d| d > tolerance).count();
    if over == 0 {
        return Ok(if worst == 0 { "exact".into() } else { format!("within {worst} (allowed {tolerance})") });
    }
    let first = diffs.clone().position(|d| d > tolerance).expect("a sample over the tolerance");
    let (pixel, channel) = (first / n, first % n);
    let (x, y) = (pixel as u32 % expected.width, pixel as u32 / expected.width);
    Err(format!(
        "{over} of {} samples differ by more than {tolerance} (up to {worst}); first at ({x}, {y}) channel {channel}: got {}, expected {}",
        expected.pixels.len(),
        got.pixels[first],
        expected.pixels[first]
    ))
}

fn cut(text: &str) -> &str {
    pipeline::wire::truncate(text, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comparison_names_the_first_sample_out_of_tolerance() {
        let expected = Frame::new(2, 1, vec![10, 20, 30, 40, 50, 60]);
        assert_eq!(compare(&expected, &expected, 0).unwrap(), "exact");
        let close = Frame::new(2, 1, vec![11, 20, 30, 40, 50, 58]);
        assert_eq!(compare(&close, &expected, 2).unwrap(), "within 2 (allowed 2)");
        let problem = compare(&close, &expected, 1).unwrap_err();
        assert!(
            problem.starts_with("1 of 6 samples differ by more than 1 (up to 2); first at (1, 0) channel 2"),
            "{problem}"
        );
    }

    #[test]
    fn reply_ids_are_read_from_results_and_failures_only() {
        let failure = pipeline::wire::TileFailure {
            job_id: "j".into(),
            tile: 7,
            worker_id: "w".into(),
            error: "no".into(),
            attempt: 1,
            unsupported: None,
        };
        assert_eq!(reply_ids(&failure.encode()), Some(("j".into(), 7)));
        assert_eq!(reply_ids(b"TPT1\x02\x00\x00\x00{}"), None);
        assert_eq!(reply_ids(b"TPR1\xff\xff\xff\xff{}"), None);
    }
}
