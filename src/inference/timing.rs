//! Stream timing: time to first token, inter-token latency percentiles and tokens per
//! second, the numbers LLM users watch. Recording is a clock read and a push per
//! response; percentiles are computed only when asked for.

use std::time::Instant;

/// Timing of a generate or chat stream so far (or in full, once it ended). Times are in
/// milliseconds from the moment the call was started; `None` until a token arrived.
///
/// Inter-token latency is measured per token as delivered to the consumer: a response
/// carrying `n` tokens that arrives `d` after the previous token-bearing one counts as
/// `n` gaps of `d / n` (tokens of the first response are covered by the time to first
/// token instead).
///
/// ```
/// let timing = quill::inference::StreamTiming::default();
/// assert_eq!(timing.tokens, 0);
/// assert!(timing.time_to_first_token_ms.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamTiming {
    /// Tokens delivered so far.
    pub tokens: u64,
    /// Responses delivered so far.
    pub responses: u64,
    /// From the start of the call to the first response with a token.
    pub time_to_first_token_ms: Option<f64>,
    /// Median inter-token latency.
    pub inter_token_p50_ms: Option<f64>,
    /// 99th-percentile inter-token latency.
    pub inter_token_p99_ms: Option<f64>,
    /// From the start of the call to the last token delivered.
    pub elapsed_ms: Option<f64>,
    /// `tokens / elapsed`, over the whole call (first-token latency included).
    pub tokens_per_second: Option<f64>,
}

/// Times the deliveries of a token stream: what [`GenerateStream`](super::GenerateStream)
/// uses, public so a raw stream (e.g. a [`TokenStream`](crate::client::TokenStream)) can
/// be timed the same way.
///
/// ```
/// use quill::inference::StreamTimer;
/// let mut timer = StreamTimer::start();
/// timer.delivered(8);
/// timer.delivered(8);
/// let t = timer.timing();
/// assert_eq!((t.tokens, t.responses), (16, 2));
/// assert!(t.time_to_first_token_ms.is_some() && t.inter_token_p50_ms.is_some());
/// ```
#[derive(Debug, Clone)]
pub struct StreamTimer {
    start: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    tokens: u64,
    responses: u64,
    /// Per-token gap in nanoseconds and the number of tokens it stands for: one entry
    /// per token-bearing response after the first (8 bytes each).
    gaps: Vec<(f32, u32)>,
}

impl StreamTimer {
    /// A recorder whose clock starts now (create it before the call is sent).
    pub fn start() -> StreamTimer {
        StreamTimer {
            start: Instant::now(),
            first: None,
            last: None,
            tokens: 0,
            responses: 0,
            gaps: Vec::new(),
        }
    }

    /// One response carrying `tokens` tokens was handed to the consumer.
    pub fn delivered(&mut self, tokens: usize) {
        self.responses += 1;
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        let n = u32::try_from(tokens).unwrap_or(u32::MAX);
        match self.last {
            None => self.first = Some(now),
            Some(last) => {
                let per_token = now.duration_since(last).as_nanos() as f64 / f64::from(n);
                self.gaps.push((per_token as f32, n));
            }
        }
        self.last = Some(now);
        self.tokens += tokens as u64;
    }

    /// The summary so far.
    pub fn timing(&self) -> StreamTiming {
        let ms = |t: Instant| t.duration_since(self.start).as_secs_f64() * 1e3;
        let elapsed_ms = self.last.map(ms);
        let (p50, p99) = self.percentiles();
        StreamTiming {
            tokens: self.tokens,
            responses: self.responses,
            time_to_first_token_ms: self.first.map(ms),
            inter_token_p50_ms: p50,
            inter_token_p99_ms: p99,
            elapsed_ms,
            tokens_per_second: elapsed_ms
                .filter(|&e| e > 0.0)
                .map(|e| self.tokens as f64 / (e / 1e3)),
        }
    }

    /// Weighted nearest-rank percentiles of the per-token gaps, in milliseconds.
    fn percentiles(&self) -> (Option<f64>, Option<f64>) {
        let total: u64 = self.gaps.iter().map(|&(_, n)| u64::from(n)).sum();
        if total == 0 {
            return (None, None);
        }
        let mut gaps = self.gaps.clone();
        gaps.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let rank = |q: f64| {
            let want = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0u64;
            for &(gap, n) in &gaps {
                seen += u64::from(n);
                if seen >= want {
                    return Some(f64::from(gap) / 1e6);
                }
            }
            gaps.last().map(|&(gap, _)| f64::from(gap) / 1e6)
        };
        (rank(0.50), rank(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn nothing_delivered_has_no_times() {
        let t = StreamTimer::start().timing();
        assert_eq!(t, StreamTiming::default());
    }

    #[test]
    fn gaps_are_split_per_token_and_weighted() {
        let mut r = StreamTimer::start();
        r.delivered(0);
        r.delivered(4);
        // 99 tokens each 1 ms apart, then one batch of 1 token after 50 ms.
        r.gaps.extend(std::iter::repeat_n((1e6f32, 1u32), 98));
        r.gaps.push((5e6, 2)); // a 10 ms gap for 2 tokens: 5 ms each
        let t = r.timing();
        assert_eq!(t.tokens, 4);
        assert_eq!(t.responses, 2);
        assert_eq!(t.inter_token_p50_ms, Some(1.0));
        assert_eq!(t.inter_token_p99_ms, Some(5.0));
        assert!(t.time_to_first_token_ms.is_some());
    }

    #[test]
    fn tokens_per_second_counts_from_the_start() {
        let mut r = StreamTimer::start();
        std::thread::sleep(Duration::from_millis(20));
        r.delivered(10);
        std::thread::sleep(Duration::from_millis(20));
        r.delivered(10);
        let t = r.timing();
        let elapsed = t.elapsed_ms.unwrap();
        assert!(elapsed >= 40.0, "{elapsed}");
        let rate = t.tokens_per_second.unwrap();
        assert!((rate - 20.0 / (elapsed / 1e3)).abs() < 1e-6);
        let gap = t.inter_token_p50_ms.unwrap();
        assert!((2.0..20.0).contains(&gap), "20 ms over 10 tokens: {gap}");
        assert!(t.time_to_first_token_ms.unwrap() >= 20.0);
    }
}
