//! Friendly generated VM names (`brisk-otter`) for when `--name` is absent.

use rand::Rng;
use rand::seq::IndexedRandom;

use crate::VmName;

const ADJECTIVES: &[&str] = &[
    "amber", "bold", "brisk", "calm", "clever", "cosy", "crisp", "daring", "eager", "fancy",
    "fluffy", "gentle", "glad", "golden", "happy", "hardy", "jolly", "keen", "lively", "lucky",
    "mellow", "merry", "nimble", "plucky", "proud", "quick", "quiet", "rapid", "shiny", "silent",
    "snowy", "spry", "steady", "sunny", "swift", "tidy", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "badger", "beaver", "bison", "crane", "dingo", "falcon", "ferret", "finch", "gecko", "heron",
    "ibex", "koala", "lemur", "lynx", "marmot", "marten", "moose", "newt", "ocelot", "otter",
    "panda", "puffin", "quail", "raven", "robin", "salmon", "stoat", "tapir", "toucan", "walrus",
    "weasel", "wombat", "yak", "zebra",
];

/// An `adjective-noun` name for which `taken` says false. After a number of
/// collisions a numeric suffix is added, so this always terminates.
pub fn generate_name(taken: impl Fn(&str) -> bool) -> VmName {
    let mut rng = rand::rng();
    let pick = |rng: &mut rand::rngs::ThreadRng| {
        let a = ADJECTIVES.choose(rng).copied().unwrap_or("quick");
        let n = NOUNS.choose(rng).copied().unwrap_or("otter");
        format!("{a}-{n}")
    };
    for _ in 0..64 {
        let name = pick(&mut rng);
        if !taken(&name) {
            return VmName::parse(&name).expect("word lists hold valid DNS labels");
        }
    }
    loop {
        let name = format!("{}-{}", pick(&mut rng), rng.random_range(2..10_000));
        if !taken(&name) {
            return VmName::parse(&name).expect("word lists hold valid DNS labels");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn word_lists_make_valid_names() {
        for a in ADJECTIVES {
            for n in NOUNS {
                VmName::parse(&format!("{a}-{n}-9999")).unwrap();
            }
        }
    }

    #[test]
    fn avoids_taken_names_even_when_all_pairs_are_taken() {
        let all: HashSet<String> = ADJECTIVES
            .iter()
            .flat_map(|a| NOUNS.iter().map(move |n| format!("{a}-{n}")))
            .collect();
        let name = generate_name(|n| all.contains(n));
        assert!(!all.contains(name.as_str()));
        assert_eq!(name.as_str().matches('-').count(), 2);
    }
}
