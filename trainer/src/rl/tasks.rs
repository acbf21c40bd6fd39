//! Procedural task families with exact checkers, for RL with verifiable
//! rewards.
//!
//! A task is `(family, seed, level)` ([`TaskRef`]): anyone regenerates its
//! prompt and answer from those three numbers, so a receiver of someone
//! else's rollouts re-scores them with its own checker. Prompts are short
//! ASCII (the small policy reads characters); the answer is checked exactly,
//! after trimming spaces. The reward is 1 for the right answer and 0
//! otherwise (no format reward: the answers are one short token string, and
//! the supervised warm-up teaches the format).

use crate::rng::Rng;
use protocol::rollouts::{FAMILIES, MAX_LEVEL, TaskRef};

/// The family names, by index.
pub const NAMES: [&str; FAMILIES as usize] = ["arithmetic", "base", "fraction", "logic", "calendar", "sort", "count"];

/// The longest prompt any family generates (checked by a test).
pub const MAX_PROMPT_CHARS: usize = 22;

/// A generated task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What the policy sees.
    pub prompt: String,
    /// The exact answer.
    pub answer: String,
}

/// The index of a family name.
pub fn family(name: &str) -> Option<u8> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}

/// A family's name (`?` for an index out of range).
pub fn family_name(index: u8) -> &'static str {
    NAMES.get(index as usize).copied().unwrap_or("?")
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Uniform in `lo..=hi`.
fn pick(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.below((hi - lo + 1) as usize) as u64
}

/// Generates a task. `None` for a family or level out of range.
pub fn generate(t: TaskRef) -> Option<Problem> {
    if t.family >= FAMILIES || t.level == 0 || t.level > MAX_LEVEL {
        return None;
    }
    let level = u64::from(t.level);
    let mut rng = Rng::from_u64(t.seed ^ (u64::from(t.family) << 56) ^ (level << 48) ^ 0x5eed_7a5c);
    let (prompt, answer) = match t.family {
        // Sums (level 1: digits), sums and differences up to 99, products up to 12 x 12.
        0 => match level {
            1 => {
                let (a, b) = (pick(&mut rng, 0, 9), pick(&mut rng, 0, 9));
                (format!("{a}+{b}="), (a + b).to_string())
            }
            2 => {
                let (a, b) = (pick(&mut rng, 0, 99), pick(&mut rng, 0, 99));
                if rng.below(2) == 0 {
                    (format!("{a}+{b}="), (a + b).to_string())
                } else {
                    let (a, b) = (a.max(b), a.min(b));
                    (format!("{a}-{b}="), (a - b).to_string())
                }
            }
            _ => {
                let (a, b) = (pick(&mut rng, 0, 12), pick(&mut rng, 0, 12));
                (format!("{a}*{b}="), (a * b).to_string())
            }
        },
        // Decimal to binary: below 8, 32, 256.
        1 => {
            let n = pick(&mut rng, 0, [7, 31, 255][level as usize - 1]);
            (format!("bin {n}="), format!("{n:b}"))
        }
        // Reduce a fraction p*g / q*g to p/q.
        2 => {
            let (qmax, gmax) = [(4, 3), (9, 5), (12, 9)][level as usize - 1];
            let q = pick(&mut rng, 2, qmax);
            let mut p = pick(&mut rng, 1, q - 1);
            while gcd(p, q) != 1 {
                p = pick(&mut rng, 1, q - 1);
            }
            let g = pick(&mut rng, 2, gmax);
            (format!("red {}/{}=", p * g, q * g), format!("{p}/{q}"))
        }
        // Propositional logic over T and F: `!` binds tightest, then `&`, then `|`.
        3 => {
            let lit = |rng: &mut Rng, neg: bool| -> (String, bool) {
                let v = rng.below(2) == 0;
                if neg && rng.below(2) == 0 { (format!("!{}", tf(v)), !v) } else { (tf(v).to_string(), v) }
            };
            let op = |rng: &mut Rng| if rng.below(2) == 0 { '&' } else { '|' };
            let terms = if level == 3 { 3 } else { 2 };
            let mut text = String::new();
            let mut ops = Vec::new();
            let mut vals = Vec::new();
            for i in 0..terms {
                if i > 0 {
                    let o = op(&mut rng);
                    text.push(o);
                    ops.push(o);
                }
                let (s, v) = lit(&mut rng, level >= 2);
                text.push_str(&s);
                vals.push(v);
            }
            // `&` first, then `|`.
            let mut ors = vec![vals[0]];
            for (o, v) in ops.iter().zip(&vals[1..]) {
                if *o == '&' {
                    let last = ors.last_mut().expect("one term at least");
                    *last = *last && *v;
                } else {
                    ors.push(*v);
                }
            }
            (format!("{text}="), tf(ors.iter().any(|v| *v)).to_string())
        }
        // Day of the week after n days.
        4 => {
            let d = rng.below(7);
            let n = pick(&mut rng, 0, [6, 30, 365][level as usize - 1]);
            (format!("{}+{n}=", DAYS[d]), DAYS[(d + n as usize) % 7].to_string())
        }
        // Sort digits.
        5 => {
            let len = [3, 4, 6][level as usize - 1];
            let mut digits: Vec<u8> = (0..len).map(|_| b'0' + rng.below(10) as u8).collect();
            let text = String::from_utf8(digits.clone()).expect("ASCII digits");
            digits.sort_unstable();
            (format!("sort {text}="), String::from_utf8(digits).expect("ASCII digits"))
        }
        // Count a letter.
        _ => {
            let (len, letters) = [(4, 2), (6, 3), (10, 4)][level as usize - 1];
            let text: String = (0..len).map(|_| (b'a' + rng.below(letters) as u8) as char).collect();
            let c = (b'a' + rng.below(letters) as u8) as char;
            (format!("count {c}:{text}="), text.chars().filter(|x| *x == c).count().to_string())
        }
    };
    Some(Problem { prompt, answer })
}

/// The task asked in English, for an instruction-tuned language model
/// (`smollm2-135m`): the same problem and answer as [`generate`]'s prompt,
/// with the expected answer format spelled out. `None` as for [`generate`].
pub fn question(t: TaskRef) -> Option<String> {
    let p = generate(t)?;
    let body = p.prompt.trim_end_matches('=');
    let after = |prefix: &str| body.strip_prefix(prefix).unwrap_or(body).to_string();
    Some(match t.family {
        0 => format!("What is {body}? Answer with the number only."),
        1 => format!("Write the number {} in binary. Answer with the binary digits only.", after("bin ")),
        2 => format!("Reduce the fraction {} to lowest terms. Answer with the fraction only, like 2/3.", after("red ")),
        3 => format!(
            "T is true and F is false; ! is not, & is and, | is or (! binds tightest, then &, then |). \
             What is {body}? Answer with T or F only."
        ),
        4 => {
            let (day, n) = body.split_once('+').unwrap_or((body, "0"));
            format!(
                "Today is {day}. Which day of the week is it in {n} days? \
                 Answer with the day's three-letter name only (Mon, Tue, Wed, Thu, Fri, Sat or Sun)."
            )
        }
        5 => format!("Sort the digits of {} in ascending order. Answer with the digits only.", after("sort ")),
        _ => {
            let rest = after("count ");
            let (c, text) = rest.split_once(':').unwrap_or(("a", &rest));
            format!("How many times does the letter {c} occur in {text}? Answer with the number only.")
        }
    })
}

fn tf(v: bool) -> &'static str {
    if v { "T" } else { "F" }
}

/// The reward of `completion` for task `t` under [`Checker::Exact`].
pub fn reward(t: TaskRef, completion: &str) -> f32 {
    Checker::Exact.reward(t, completion)
}

/// Re-scores a group of completions under [`Checker::Exact`].
pub fn rescore<S: AsRef<str>>(t: TaskRef, completions: &[S]) -> Vec<f32> {
    Checker::Exact.rescore(t, completions)
}

/// How a completion is checked against its task's answer. Every peer of a
/// run uses the same one (it follows from the run's policy, which is part
/// of the run id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checker {
    /// The completion is the answer (ASCII spaces around it ignored):
    /// `tasks-gpt`, whose warm-up teaches it the bare answer.
    Exact,
    /// The completion is the answer, or its last word is (words split at
    /// spaces and `=`, with the punctuation and quotes around them
    /// dropped): `smollm2-135m`, which answers in sentences ("3 + 4 = 7",
    /// "The answer is 7."). Only the last word counts, so listing guesses
    /// does not pay.
    LastWord,
}

impl Checker {
    /// 1 for the right answer, else 0 (also for a task that does not exist).
    pub fn reward(self, t: TaskRef, completion: &str) -> f32 {
        self.rescore(t, &[completion])[0]
    }

    /// The rewards of a group of completions.
    pub fn rescore<S: AsRef<str>>(self, t: TaskRef, completions: &[S]) -> Vec<f32> {
        let Some(answer) = generate(t).map(|p| p.answer) else { return vec![0.0; completions.len()] };
        completions
            .iter()
            .map(|c| {
                let c = c.as_ref();
                let right = c.trim_matches(' ') == answer || (self == Checker::LastWord && last_word(c) == answer);
                if right { 1.0 } else { 0.0 }
            })
            .collect()
    }
}

/// The last word of a text: split at whitespace and `=`, without the
/// punctuation, quotes and emphasis around it.
fn last_word(text: &str) -> &str {
    text.split(|c: char| c.is_ascii_whitespace() || c == '=')
        .rev()
        .map(|w| {
            w.trim_matches(|c: char| {
                matches!(c, '.' | ',' | '!' | '?' | ';' | ':' | '"' | '\'' | '*' | '`' | '(' | ')')
            })
        })
        .find(|w| !w.is_empty())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(family: u8, seed: u64, level: u8) -> TaskRef {
        TaskRef { family, seed, level }
    }

    #[test]
    fn every_family_and_level_generates_deterministic_checkable_tasks() {
        for f in 0..FAMILIES {
            for level in 1..=MAX_LEVEL {
                let mut prompts = std::collections::BTreeSet::new();
                for seed in 0..200 {
                    let p = generate(t(f, seed, level)).unwrap();
                    assert_eq!(generate(t(f, seed, level)).unwrap(), p, "deterministic");
                    assert!(p.prompt.is_ascii() && p.answer.is_ascii());
                    assert!(p.prompt.len() <= MAX_PROMPT_CHARS && p.answer.len() <= 8, "{p:?}");
                    assert_eq!(reward(t(f, seed, level), &p.answer), 1.0);
                    assert_eq!(reward(t(f, seed, level), &format!(" {} ", p.answer)), 1.0);
                    assert_eq!(reward(t(f, seed, level), &format!("{}0", p.answer)), 0.0);
                    prompts.insert(p.prompt);
                }
                assert!(prompts.len() > 5, "{} level {level} varies with the seed", family_name(f));
            }
        }
        assert!(generate(t(FAMILIES, 0, 1)).is_none());
        assert!(generate(t(0, 0, 0)).is_none());
        assert_eq!(reward(t(0, 0, 9), "1"), 0.0);
    }

    #[test]
    fn answers_are_right() {
        // Check each family's answer against an independent reading of its prompt.
        for seed in 0..300 {
            let p = generate(t(0, seed, 2)).unwrap();
            let e = p.prompt.trim_end_matches('=');
            let v: i64 = if let Some((a, b)) = e.split_once('+') {
                a.parse::<i64>().unwrap() + b.parse::<i64>().unwrap()
            } else {
                let (a, b) = e.split_once('-').unwrap();
                a.parse::<i64>().unwrap() - b.parse::<i64>().unwrap()
            };
            assert_eq!(p.answer, v.to_string());
            let p = generate(t(1, seed, 3)).unwrap();
            let n: u64 = p.prompt[4..p.prompt.len() - 1].parse().unwrap();
            assert_eq!(u64::from_str_radix(&p.answer, 2).unwrap(), n);
            let p = generate(t(2, seed, 3)).unwrap();
            let (a, b) = p.prompt[4..p.prompt.len() - 1].split_once('/').unwrap();
            let (x, y) = p.answer.split_once('/').unwrap();
            let (a, b, x, y): (u64, u64, u64, u64) =
                (a.parse().unwrap(), b.parse().unwrap(), x.parse().unwrap(), y.parse().unwrap());
            assert_eq!(a * y, b * x);
            assert_eq!(gcd(x, y), 1);
            let p = generate(t(5, seed, 3)).unwrap();
            let mut d: Vec<char> = p.prompt[5..p.prompt.len() - 1].chars().collect();
            d.sort_unstable();
            assert_eq!(p.answer, d.into_iter().collect::<String>());
        }
        // Precedence: `&` before `|`, `!` before both.
        let cases = (0..400).map(|s| generate(t(3, s, 3)).unwrap());
        for p in cases {
            let expr = p.prompt.trim_end_matches('=');
            let ors = expr.split('|').any(|and| and.split('&').all(|l| l == "T" || l == "!F"));
            assert_eq!(p.answer, tf(ors), "{expr}");
        }
        assert_eq!(generate(t(4, 1, 3)).map(|p| DAYS.contains(&p.answer.as_str())), Some(true));
    }

    #[test]
    fn rescoring_matches_rewards() {
        let task = t(6, 4, 2);
        let p = generate(task).unwrap();
        let got = rescore(task, &[p.answer.clone(), "x".into(), String::new(), format!("\n{}", p.answer)]);
        assert_eq!(got, vec![1.0, 0.0, 0.0, 0.0], "a newline is not a space the policy could read back");
        assert_eq!(family("sort"), Some(5));
        assert_eq!(family("chess"), None);
    }

    #[test]
    fn the_last_word_checker_reads_an_answer_given_in_a_sentence_and_only_its_last_word() {
        let task = t(0, 9, 2);
        let a = generate(task).unwrap().answer;
        let said = [
            a.clone(),
            format!("The answer is {a}."),
            format!("x = **{a}**"),
            format!("1+1={a}"),
            format!("{a} is wrong, it is 1000"),
            format!("{a}1"),
            String::new(),
        ];
        assert_eq!(Checker::LastWord.rescore(task, &said), vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(Checker::Exact.rescore(task, &said), vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let frac = t(2, 1, 2);
        let f = generate(frac).unwrap().answer;
        assert_eq!(Checker::LastWord.reward(frac, &format!("It reduces to {f}.")), 1.0);
        let nothing = TaskRef { family: 99, seed: 0, level: 1 };
        assert_eq!(Checker::LastWord.rescore(nothing, &["1"]), vec![0.0]);
    }
}
