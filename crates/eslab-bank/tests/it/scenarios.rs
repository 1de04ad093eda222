//! One given/when/then scenario per rule of the account.

use eslab_bank::{
    Account, AccountCommand, AccountError, AccountEvent, Amount, Balance, MAX_OWNER_CHARS, MoneyError, OverdraftLimit,
    Owner,
};
use eslab_testing::Scenario;

use crate::helpers::*;

#[test]
fn opens_an_account() {
    Scenario::<Account>::given([]).when(open("  Ada ", 500)).then([opened(500)]);
}

#[test]
fn refuses_a_double_open() {
    Scenario::<Account>::given([opened(0)]).when(open("Ada", 0)).then_err(AccountError::AlreadyOpen);
}

#[test]
fn refuses_to_reopen_a_closed_account() {
    Scenario::<Account>::given([opened(0), AccountEvent::AccountClosed {}])
        .when(open("Ada", 0))
        .then_err(AccountError::AlreadyOpen);
}

#[test]
fn refuses_a_blank_owner() {
    Scenario::<Account>::given([]).when(open(" \t", 0)).then_err(AccountError::BlankOwner);
}

#[test]
fn refuses_an_owner_longer_than_the_limit() {
    // Counted in characters after trimming: 200 multi-byte characters are fine, 201 are not.
    let longest = format!("  {}  ", "é".repeat(MAX_OWNER_CHARS));
    let opened_longest = AccountEvent::AccountOpened {
        owner: Owner { name: "é".repeat(MAX_OWNER_CHARS).into() },
        currency: eur(),
        overdraft_limit: OverdraftLimit::NONE,
    };
    Scenario::<Account>::given([]).when(open(&longest, 0)).then([opened_longest]);
    let too_long = "x".repeat(MAX_OWNER_CHARS + 1);
    Scenario::<Account>::given([]).when(open(&too_long, 0)).then_err(AccountError::OwnerTooLong(MAX_OWNER_CHARS + 1));
    assert_eq!(AccountError::OwnerTooLong(MAX_OWNER_CHARS + 1).rule(), "owner-too-long");
}

#[test]
fn an_owner_stored_before_the_limit_is_kept() {
    let long = AccountEvent::AccountOpened {
        owner: Owner { name: "x".repeat(64 * 1024).into() },
        currency: eur(),
        overdraft_limit: OverdraftLimit::NONE,
    };
    Scenario::<Account>::given([long]).when(deposit(5)).then([deposited(5, 5)]);
}

#[test]
fn deposits() {
    Scenario::<Account>::given([opened(0), deposited(100, 100)]).when(deposit(250)).then([deposited(250, 350)]);
}

#[test]
fn withdraws_within_the_balance() {
    Scenario::<Account>::given([opened(0), deposited(100, 100)]).when(withdraw(100)).then([withdrawn(100, 0)]);
}

#[test]
fn withdraws_into_the_overdraft_up_to_its_limit() {
    Scenario::<Account>::given([opened(500), deposited(100, 100)]).when(withdraw(600)).then([withdrawn(600, -500)]);
}

#[test]
fn refuses_a_withdrawal_beyond_the_overdraft() {
    Scenario::<Account>::given([opened(500), deposited(100, 100)]).when(withdraw(601)).then_err(
        AccountError::InsufficientFunds {
            balance: Balance::new(100),
            overdraft_limit: OverdraftLimit::new(500).unwrap(),
            requested: amount(601),
        },
    );
}

#[test]
fn refuses_a_currency_mismatch() {
    Scenario::<Account>::given([opened(0)])
        .when(AccountCommand::Deposit { amount: amount(1), currency: usd() })
        .then_err(AccountError::CurrencyMismatch { account: eur(), command: usd() });
    Scenario::<Account>::given([opened(0), deposited(5, 5)])
        .when(AccountCommand::Withdraw { amount: amount(1), currency: usd() })
        .then_err(AccountError::CurrencyMismatch { account: eur(), command: usd() });
}

#[test]
fn refuses_anything_on_an_unopened_account() {
    for command in [deposit(1), withdraw(1), AccountCommand::Close] {
        Scenario::<Account>::given([]).when(command).then_err(AccountError::NotOpen);
    }
}

#[test]
fn refuses_anything_on_a_closed_account() {
    for command in [deposit(1), withdraw(1), AccountCommand::Close] {
        Scenario::<Account>::given([opened(0), AccountEvent::AccountClosed {}])
            .when(command)
            .then_err(AccountError::Closed);
    }
}

#[test]
fn closes_an_empty_account_only() {
    Scenario::<Account>::given([opened(0)]).when(AccountCommand::Close).then([AccountEvent::AccountClosed {}]);
    Scenario::<Account>::given([opened(0), deposited(7, 7)])
        .when(AccountCommand::Close)
        .then_err(AccountError::NonZeroBalance(Balance::new(7)));
}

#[test]
fn amounts_must_be_positive_and_limits_non_negative() {
    assert_eq!(Amount::new(0), Err(MoneyError::NonPositive(0)));
    assert_eq!(Amount::new(-1), Err(MoneyError::NonPositive(-1)));
    assert_eq!(OverdraftLimit::new(-1), Err(MoneyError::Negative(-1)));
    // Serde enforces the same rules at the edge.
    assert!(serde_json::from_str::<Amount>("0").is_err());
    assert!(serde_json::from_str::<OverdraftLimit>("-3").is_err());
    assert!(serde_json::from_str::<eslab_bank::Currency>("\"XYZ\"").is_err());
}

#[test]
fn overflow_is_an_error_never_a_wrap() {
    Scenario::<Account>::given([opened(0), deposited(i64::MAX, i64::MAX)])
        .when(deposit(1))
        .then_err(AccountError::Money(MoneyError::Overflow));
    let max_limit = AccountEvent::AccountOpened {
        owner: Owner { name: "Ada".into() },
        currency: eur(),
        overdraft_limit: OverdraftLimit::new(i64::MAX).unwrap(),
    };
    Scenario::<Account>::given([max_limit, withdrawn(i64::MAX, -i64::MAX)])
        .when(withdraw(2))
        .then_err(AccountError::Money(MoneyError::Overflow));
}

#[test]
fn every_error_names_its_rule() {
    assert_eq!(
        AccountError::InsufficientFunds {
            balance: Balance::ZERO,
            overdraft_limit: OverdraftLimit::NONE,
            requested: amount(1)
        }
        .rule(),
        "insufficient-funds"
    );
    assert_eq!(AccountError::Closed.rule(), "closed");
}
