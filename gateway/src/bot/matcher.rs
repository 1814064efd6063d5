//! Trigger-phrase matching for the built-in bot's topics.
//!
//! Power Virtual Agents matches what a customer types against each topic's trigger phrases
//! with a language model; we do the forgiving, predictable subset: case, punctuation,
//! plurals, filler words and word order do not matter. A phrase matches when all of its
//! content words are in the utterance; longer phrases (more specific) win ties.

use std::collections::HashSet;

/// Words that carry no meaning for matching.
const FILLER: &[&str] = &[
    "a", "an", "the", "to", "with", "i", "im", "me", "my", "mine", "for", "of", "is", "am", "are", "be", "can",
    "could", "would", "will", "you", "your", "it", "its", "please", "pls", "want", "wanna", "need", "like", "id",
    "some", "just", "do", "does", "on", "in", "at", "and", "hi", "hello", "hey", "there", "about", "so", "have", "has",
    "got", "get", "let", "us",
];

/// Lowercases, drops punctuation and filler words, and folds simple plurals.
pub fn words(s: &str) -> Vec<String> {
    let cleaned: String = s
        .chars()
        .filter(|c| *c != '\'' && *c != '’')
        .map(|c| if c.is_alphanumeric() { c.to_lowercase().next().unwrap_or(c) } else { ' ' })
        .collect();
    cleaned
        .split_whitespace()
        .filter(|w| !FILLER.contains(w))
        .map(|w| {
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect()
}

/// A compiled trigger phrase.
#[derive(Clone, Debug)]
pub struct Phrase {
    words: Vec<String>,
}

impl Phrase {
    pub fn new(text: &str) -> Phrase {
        let mut w = words(text);
        w.dedup();
        Phrase { words: w }
    }

    /// True if the phrase has no content words (all filler): it could never match.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// How specific a match is (`None`: no match).
    pub fn score(&self, utterance: &HashSet<String>) -> Option<usize> {
        (!self.words.is_empty() && self.words.iter().all(|w| utterance.contains(w))).then_some(self.words.len())
    }
}

/// The utterance as a set of content words.
pub fn utterance(s: &str) -> HashSet<String> {
    words(s).into_iter().collect()
}

/// Whether an answer matches an option (same content words, forgiving case and punctuation).
pub fn same_answer(answer: &str, option: &str) -> bool {
    let a = words(answer);
    let o = words(option);
    if o.is_empty() {
        return answer.trim().eq_ignore_ascii_case(option.trim());
    }
    a == o || (o.len() == 1 && a.contains(&o[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_forgive_case_punctuation_and_order() {
        let p = Phrase::new("lost credit card");
        let cases = [
            ("I LOST my credit card!!", true),
            ("my credit card, I lost it", true),
            ("lost credit cards", true),
            ("credit card", false),
            ("lost my debit card", false),
        ];
        for (u, want) in cases {
            assert_eq!(p.score(&utterance(u)).is_some(), want, "{u}");
        }
        assert!(Phrase::new("speak to agent").score(&utterance("Could I speak with an agent please?")).is_some());
        assert!(Phrase::new("the a to").is_empty());
        assert!(same_answer("Stolen.", "stolen"));
        assert!(same_answer("it was stolen", "Stolen"));
        assert!(!same_answer("lost", "stolen"));
    }
}
