//! Helpers shared by the fuzz targets: the first bytes of an input choose where the rest
//! is cut into chunks, as a socket might deliver it.

/// Splits `input` into chunk sizes and the data behind them.
///
/// Byte 0 says how many size bytes follow (its low 4 bits, so 0..=15); each size byte
/// `b` is a chunk of `b + 1` bytes. No sizes means the data arrives in one piece.
pub fn take_cuts(input: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = input.split_first() else {
        return (Vec::new(), input);
    };
    let n = usize::from(n & 0x0f).min(rest.len());
    let (sizes, data) = rest.split_at(n);
    (sizes.iter().map(|&b| usize::from(b) + 1).collect(), data)
}

/// `data` cut into pieces of the `cuts` sizes, cycling through them; one piece when
/// `cuts` is empty. An empty `data` gives no pieces.
pub fn chunks<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    if cuts.is_empty() {
        return if data.is_empty() {
            Vec::new()
        } else {
            vec![data]
        };
    }
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = cuts[i % cuts.len()].min(data.len() - pos);
        out.push(&data[pos..pos + n]);
        pos += n;
        i += 1;
    }
    out
}

/// `data` cut into consecutive pieces of the `cuts` sizes (cycling), used to derive a
/// list of messages from an input. Unlike [`chunks`], empty pieces are possible: a
/// size of 256 (byte 0xff) yields an empty message.
pub fn messages<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    if cuts.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() && out.len() < 64 {
        let size = cuts[i % cuts.len()];
        let n = if size == 256 {
            0
        } else {
            size.min(data.len() - pos)
        };
        out.push(&data[pos..pos + n]);
        pos += n;
        i += 1;
    }
    out
}
