//! The demo text generator of `inference.v1.LLMService/Generate*`.
//!
//! **This is not a language model.** It is a word-level Markov chain (bigram counts)
//! over a bundled public-domain text, the opening of Lewis Carroll's *Alice's
//! Adventures in Wonderland* (1865), in `corpus.txt`. It exists so clients can be
//! tested against realistic-looking token streams: every token is one word, its `id`
//! the word's index in the vocabulary, its `logprob` the natural log of the probability
//! of the chosen transition under the temperature-scaled distribution.
//!
//! Output is deterministic: the random generator is seeded from the request's `seed`,
//! or else from an FNV-1a hash of the prompt and embedding.
//!
//! ```
//! use quill::server::generator::Sampler;
//! let mut a = Sampler::new("Alice", &[], 1.0, Some(7)).unwrap();
//! let mut b = Sampler::new("Alice", &[], 1.0, Some(7)).unwrap();
//! assert_eq!(a.next_token(), b.next_token());
//! ```

use std::collections::HashMap;
use std::sync::LazyLock;

use super::hash::Fnv1a64;
use crate::Token;

const CORPUS: &str = include_str!("corpus.txt");

/// Highest accepted temperature.
pub const MAX_TEMPERATURE: f64 = 100.0;

/// Vocabulary and bigram transition counts of the corpus.
#[derive(Debug)]
pub struct Model {
    vocab: Vec<&'static str>,
    index: HashMap<&'static str, u32>,
    lower_index: HashMap<String, u32>,
    /// `next[w]`: `(successor id, count)`, sorted by id. The corpus is read as a cycle,
    /// so every word has at least one successor.
    next: Vec<Vec<(u32, u32)>>,
}

static MODEL: LazyLock<Model> = LazyLock::new(|| Model::build(CORPUS));

/// The model built from the bundled corpus.
pub fn model() -> &'static Model {
    &MODEL
}

impl Model {
    fn build(text: &'static str) -> Model {
        let mut vocab = Vec::new();
        let mut index = HashMap::new();
        let mut lower_index = HashMap::new();
        let mut ids = Vec::new();
        for word in text.split_whitespace() {
            let id = *index.entry(word).or_insert_with(|| {
                vocab.push(word);
                (vocab.len() - 1) as u32
            });
            lower_index.entry(word.to_lowercase()).or_insert(id);
            ids.push(id);
        }
        let mut counts: Vec<HashMap<u32, u32>> = vec![HashMap::new(); vocab.len()];
        for (i, &w) in ids.iter().enumerate() {
            let succ = ids[(i + 1) % ids.len()];
            *counts[w as usize].entry(succ).or_insert(0) += 1;
        }
        let next = counts
            .into_iter()
            .map(|m| {
                let mut v: Vec<(u32, u32)> = m.into_iter().collect();
                v.sort_unstable();
                v
            })
            .collect();
        Model {
            vocab,
            index,
            lower_index,
            next,
        }
    }

    /// Number of distinct words.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The word of a token id.
    pub fn word(&self, id: u32) -> Option<&'static str> {
        self.vocab.get(id as usize).copied()
    }

    /// The id of a word (exact match first, then case-insensitive).
    pub fn lookup(&self, word: &str) -> Option<u32> {
        self.index
            .get(word)
            .or_else(|| self.lower_index.get(&word.to_lowercase()))
            .copied()
    }
}

/// FNV-1a 64 of the prompt and the embedding (f64 bits, little-endian).
pub fn seed_for(prompt: &str, embedding: &[f64]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(prompt.as_bytes());
    h.update(&[0xff]);
    for x in embedding {
        h.update(&x.to_bits().to_le_bytes());
    }
    h.finish()
}

/// Generates tokens one at a time.
#[derive(Debug)]
pub struct Sampler {
    model: &'static Model,
    rng: fastrand::Rng,
    state: u32,
    position: u32,
    /// `None` for temperature 0 (greedy).
    inv_temperature: Option<f64>,
    weights: Vec<f64>,
}

impl Sampler {
    /// Starts after the last word of `prompt` when the corpus knows it, else after a
    /// random word. `temperature` must be finite and in `0..=100`; 0 is greedy.
    pub fn new(
        prompt: &str,
        embedding: &[f64],
        temperature: f64,
        seed: Option<u64>,
    ) -> Result<Sampler, String> {
        if !temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
            return Err(format!(
                "temperature must be a number in 0..={MAX_TEMPERATURE}, got {temperature}"
            ));
        }
        let model = model();
        let mut rng = fastrand::Rng::with_seed(seed.unwrap_or_else(|| seed_for(prompt, embedding)));
        let state = prompt
            .split_whitespace()
            .next_back()
            .and_then(|w| model.lookup(w))
            .unwrap_or_else(|| rng.u32(..model.vocab_size() as u32));
        Ok(Sampler {
            model,
            rng,
            state,
            position: 0,
            inv_temperature: (temperature > 0.0).then(|| 1.0 / temperature),
            weights: Vec::new(),
        })
    }

    /// Continues `input_ids` (the typed `quill.inference.v1` service): seeded by FNV-1a
    /// 64 of the ids (little-endian u32s), starting after the last id when it is a
    /// word of the corpus. `temperature` as in [`new`](Self::new).
    pub fn from_ids(input_ids: &[u32], temperature: f64) -> Result<Sampler, String> {
        let mut h = Fnv1a64::new();
        for id in input_ids {
            h.update(&id.to_le_bytes());
        }
        let mut sampler = Sampler::new("", &[], temperature, Some(h.finish()))?;
        if let Some(&last) = input_ids.last() {
            if (last as usize) < sampler.model.vocab_size() {
                sampler.state = last;
            }
        }
        Ok(sampler)
    }

    /// The next token: one word, with a leading space except at position 0.
    pub fn next_token(&mut self) -> Token {
        let succ = &self.model.next[self.state as usize];
        let (id, prob) = match self.inv_temperature {
            None => {
                // Greedy: the most frequent successor, lowest id on ties.
                let mut best = succ[0];
                for &s in succ {
                    if s.1 > best.1 {
                        best = s;
                    }
                }
                (best.0, 1.0)
            }
            Some(inv_t) => {
                // p_i ∝ count_i^(1/T), computed in log space against the largest count.
                let max = succ.iter().map(|s| s.1).max().unwrap_or(1) as f64;
                self.weights.clear();
                self.weights.extend(
                    succ.iter()
                        .map(|&(_, c)| (((c as f64).ln() - max.ln()) * inv_t).exp()),
                );
                let total: f64 = self.weights.iter().sum();
                let mut u = self.rng.f64() * total;
                let mut pick = succ.len() - 1;
                for (i, w) in self.weights.iter().enumerate() {
                    if u < *w {
                        pick = i;
                        break;
                    }
                    u -= w;
                }
                (succ[pick].0, self.weights[pick] / total)
            }
        };
        let word = self.model.vocab[id as usize];
        let text = if self.position == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        let token = Token::with_text(id, text, self.position, Some(prob.ln() as f32));
        self.state = id;
        self.position += 1;
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let run = |seed, t| {
            let mut s = Sampler::new("Alice was", &[0.5], t, seed).unwrap();
            (0..40).map(|_| s.next_token()).collect::<Vec<_>>()
        };
        let a = run(None, 1.0);
        assert_eq!(a, run(None, 1.0));
        assert_ne!(a, run(Some(99), 1.0));
        for (i, t) in a.iter().enumerate() {
            assert_eq!(t.position, i as u32);
            let text = t.text.as_deref().unwrap();
            assert_eq!(text.starts_with(' '), i > 0);
            assert_eq!(model().word(t.id), Some(text.trim_start()));
            let lp = t.logprob.unwrap();
            assert!(lp <= 0.0 && lp.is_finite());
            assert!(!t.is_special);
        }
        // "was" is followed in the corpus: the first token is one of its successors.
        let was = model().lookup("was").unwrap();
        assert!(model().next[was as usize].iter().any(|s| s.0 == a[0].id));
        // Greedy output has probability 1 per step.
        assert!(run(None, 0.0).iter().all(|t| t.logprob == Some(0.0)));
        assert!(Sampler::new("", &[], -1.0, None).is_err());
        assert!(Sampler::new("", &[], f64::NAN, None).is_err());
    }
}
