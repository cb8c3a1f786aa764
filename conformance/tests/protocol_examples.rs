//! The worked examples in docs/protocol.md are what tilepipe's pipeline
//! computes: the document cannot drift from the code.

use pipeline::frame::{Channels, Frame};
use pipeline::ops::{self, Operation};

struct Example {
    op: Operation,
    input: Frame,
    halo: u32,
    output: Vec<u8>,
}

fn numbers(lines: &[&str]) -> Vec<u8> {
    lines.iter().flat_map(|l| l.split_whitespace()).map(|n| n.parse().expect("a sample")).collect()
}

fn examples(doc: &str) -> Vec<Example> {
    doc.split("```example\n")
        .skip(1)
        .map(|block| {
            let block = &block[..block.find("```").expect("a closed block")];
            let lines: Vec<&str> = block.lines().collect();
            let op: Operation = serde_json::from_str(lines[0].strip_prefix("op ").expect("op line")).expect("an op");
            let words: Vec<&str> = lines[1].split_whitespace().collect();
            let ["in", size, channels, "halo", halo] = words[..] else { panic!("bad input line {:?}", lines[1]) };
            let (w, h) = size.split_once('x').expect("WxH");
            let channels = if channels == "rgba" { Channels::Rgba } else { Channels::Rgb };
            let out_at = lines.iter().position(|l| *l == "out").expect("an out line");
            let input = numbers(&lines[2..out_at]);
            let input = Frame::with_channels(w.parse().unwrap(), h.parse().unwrap(), channels, input);
            Example { op, input, halo: halo.parse().unwrap(), output: numbers(&lines[out_at + 1..]) }
        })
        .collect()
}

#[test]
fn the_protocols_worked_examples_are_what_the_pipeline_computes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    let examples = examples(&doc);
    assert!(examples.len() >= 9, "{} examples", examples.len());
    let mut wrong = Vec::new();
    for e in &examples {
        assert_eq!(e.halo, e.op.halo(), "{:?}: the halo is the operation's", e.op);
        let got = ops::process_tile(std::slice::from_ref(&e.op), e.input.clone(), e.halo);
        if got.pixels != e.output {
            wrong.push(format!(
                "{}: the document says {:?}, the pipeline gives {:?}",
                serde_json::to_string(&e.op).unwrap(),
                e.output,
                got.pixels
            ));
        }
    }
    // Every operation has an example.
    for op in ["invert", "grayscale", "brightness_contrast", "edge_detect", "gaussian_blur", "box_blur", "sharpen"] {
        assert!(examples.iter().any(|e| e.op.name() == op), "no example of {op}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
