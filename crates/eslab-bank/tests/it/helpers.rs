use eslab_bank::{AccountCommand, AccountEvent, Amount, Balance, Currency, OverdraftLimit, Owner};

pub(crate) fn eur() -> Currency {
    "EUR".parse().unwrap()
}

pub(crate) fn usd() -> Currency {
    "USD".parse().unwrap()
}

pub(crate) fn amount(minor: i64) -> Amount {
    Amount::new(minor).unwrap()
}

pub(crate) fn opened(limit: i64) -> AccountEvent {
    AccountEvent::AccountOpened {
        owner: Owner { name: "Ada".into() },
        currency: eur(),
        overdraft_limit: OverdraftLimit::new(limit).unwrap(),
    }
}

pub(crate) fn deposited(amount_minor: i64, balance: i64) -> AccountEvent {
    AccountEvent::MoneyDeposited { amount: amount(amount_minor), balance: Balance::new(balance) }
}

pub(crate) fn withdrawn(amount_minor: i64, balance: i64) -> AccountEvent {
    AccountEvent::MoneyWithdrawn { amount: amount(amount_minor), balance: Balance::new(balance) }
}

pub(crate) fn deposit(minor: i64) -> AccountCommand {
    AccountCommand::Deposit { amount: amount(minor), currency: eur() }
}

pub(crate) fn withdraw(minor: i64) -> AccountCommand {
    AccountCommand::Withdraw { amount: amount(minor), currency: eur() }
}

pub(crate) fn open(owner: &str, limit: i64) -> AccountCommand {
    AccountCommand::Open { owner: owner.into(), currency: eur(), overdraft_limit: OverdraftLimit::new(limit).unwrap() }
}
