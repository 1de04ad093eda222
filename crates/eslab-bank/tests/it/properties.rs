//! Property tests: the aggregate agrees with a simple reference model, and the
//! balance never drops below minus the overdraft limit.

use eslab_bank::{Account, AccountCommand, AccountStatus, Amount, Currency, OverdraftLimit};
use eslab_core::Aggregate;
use eslab_testing::strategies::commands;
use proptest::prelude::*;

use crate::helpers::{eur, usd};

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![4 => Just(eur()), 1 => Just(usd())]
}

fn minor() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 1i64..10_000, 1 => Just(i64::MAX), 1 => (i64::MAX - 10)..=i64::MAX]
}

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => ("[ a-z]{0,6}", currency(), prop_oneof![Just(0i64), 0i64..5_000, Just(i64::MAX)]).prop_map(|(owner, currency, limit)| {
            AccountCommand::Open { owner, currency, overdraft_limit: OverdraftLimit::new(limit).unwrap() }
        }),
        4 => (minor(), currency()).prop_map(|(m, currency)| AccountCommand::Deposit { amount: Amount::new(m).unwrap(), currency }),
        4 => (minor(), currency()).prop_map(|(m, currency)| AccountCommand::Withdraw { amount: Amount::new(m).unwrap(), currency }),
        1 => Just(AccountCommand::Close),
        1 => Just(AccountCommand::ForgetOwner),
    ]
}

/// The obviously-correct model, in i128 so it cannot overflow.
#[derive(Debug, Default)]
struct Model {
    status: u8, // 0 unopened, 1 open, 2 closed
    currency: Option<Currency>,
    limit: i128,
    balance: i128,
}

impl Model {
    fn apply(&mut self, command: &AccountCommand) -> bool {
        let max = i128::from(i64::MAX);
        let min = i128::from(i64::MIN);
        match command {
            AccountCommand::Open { owner, currency, overdraft_limit } => {
                if self.status != 0 || owner.trim().is_empty() {
                    return false;
                }
                *self = Model {
                    status: 1,
                    currency: Some(*currency),
                    limit: i128::from(overdraft_limit.minor()),
                    balance: 0,
                };
                true
            }
            AccountCommand::Deposit { amount, currency } => {
                let next = self.balance + i128::from(amount.minor());
                if self.status != 1 || self.currency != Some(*currency) || next > max {
                    return false;
                }
                self.balance = next;
                true
            }
            AccountCommand::Withdraw { amount, currency } => {
                let next = self.balance - i128::from(amount.minor());
                if self.status != 1 || self.currency != Some(*currency) || next < min || next < -self.limit {
                    return false;
                }
                self.balance = next;
                true
            }
            // Accepted on any opened account (again: nothing to record); money untouched.
            AccountCommand::ForgetOwner => self.status != 0,
            AccountCommand::Close => {
                if self.status != 1 || self.balance != 0 {
                    return false;
                }
                self.status = 2;
                true
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn aggregate_matches_the_reference_model(commands in commands(command(), 40)) {
        let mut account = Account::default();
        let mut model = Model::default();
        let mut history = Vec::new();
        for command in &commands {
            let accepted = model.apply(command);
            match account.decide(command) {
                Ok(events) => {
                    prop_assert!(accepted, "aggregate accepted {command:?} the model refused");
                    for e in &events { account.evolve(e); }
                    history.extend(events);
                }
                Err(e) => prop_assert!(!accepted, "aggregate refused {command:?} ({e}) the model accepted"),
            }
            prop_assert_eq!(i128::from(account.balance.minor()), model.balance);
            prop_assert!(account.balance >= account.overdraft_limit.floor(), "balance below the overdraft floor");
            let status = match account.status { AccountStatus::Unopened => 0, AccountStatus::Open => 1, AccountStatus::Closed => 2 };
            prop_assert_eq!(status, model.status);
        }
        // Folding the emitted events from scratch gives the same state as evolving live.
        prop_assert_eq!(Account::fold(&history), account);
    }
}
