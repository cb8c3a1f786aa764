//! Names on the wire: a tile's key and the topics' names.

/// A tile's name on the wire, `<job id>/<tile index>`: the key of its task,
/// its result and its dead letter, and a heartbeat's `current_tile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileKey<'a> {
    pub job_id: &'a str,
    pub tile: u32,
}

impl<'a> TileKey<'a> {
    pub fn new(job_id: &'a str, tile: u32) -> Self {
        TileKey { job_id, tile }
    }

    /// Reads a key written by [`TileKey`]'s `Display`; `None` if it is not one.
    pub fn parse(key: &'a str) -> Option<Self> {
        let (job_id, tile) = key.rsplit_once('/')?;
        (!job_id.is_empty() && tile.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Some(TileKey { job_id, tile: tile.parse().ok()? }))
            .flatten()
    }
}

impl std::fmt::Display for TileKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.job_id, self.tile)
    }
}

/// Topic and consumer-group names, all under one prefix so that several
/// tilepipe installations (or tests) can share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub tasks: String,
    pub results: String,
    pub heartbeats: String,
    /// Tasks that failed too often, kept for inspection and replay.
    pub dead_letters: String,
    /// The master's announcements to all workers (jobs stopped).
    pub control: String,
    /// The consumer group all workers join to share the tasks.
    pub workers_group: String,
    /// The master's consumer group for results.
    pub master_group: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            tasks: format!("{prefix}tasks"),
            results: format!("{prefix}results"),
            heartbeats: format!("{prefix}heartbeats"),
            dead_letters: format!("{prefix}dead-letters"),
            control: format!("{prefix}control"),
            workers_group: format!("{prefix}tilepipe-workers"),
            master_group: format!("{prefix}tilepipe-master"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TileKey;

    #[test]
    fn a_tile_key_reads_back_what_it_writes_and_nothing_else() {
        let key = TileKey::new("0f1e-job", 17);
        assert_eq!(key.to_string(), "0f1e-job/17");
        assert_eq!(TileKey::parse("0f1e-job/17"), Some(key));
        for bad in ["", "job", "/3", "job/", "job/-1", "job/+1", "job/x", "job/99999999999"] {
            assert_eq!(TileKey::parse(bad), None, "{bad:?}");
        }
    }
}
