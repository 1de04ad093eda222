//! Scenarios of the transfer aggregate's life cycle.

use eslab_bank::{Transfer, TransferCommand as C, TransferError, TransferEvent as E, TransferStatus};
use eslab_testing::Scenario;

use crate::helpers::{amount, eur};

fn requested() -> E {
    E::TransferRequested { from: "a".into(), to: "b".into(), amount: amount(500), currency: eur() }
}

#[test]
fn a_transfer_is_requested_between_two_accounts() {
    let request = C::Request { from: "a".into(), to: "b".into(), amount: amount(500), currency: eur() };
    Scenario::<Transfer>::given([]).when(request).then([requested()]);
    let same = C::Request { from: "a".into(), to: "a".into(), amount: amount(1), currency: eur() };
    Scenario::<Transfer>::given([]).when(same).then_err(TransferError::SameAccount);
    let again = C::Request { from: "a".into(), to: "b".into(), amount: amount(1), currency: eur() };
    Scenario::<Transfer>::given([requested()]).when(again).then_err(TransferError::AlreadyRequested);
}

#[test]
fn the_happy_path_completes() {
    Scenario::<Transfer>::given([requested()]).when(C::MarkDebited).then([E::SourceDebited {}]);
    Scenario::<Transfer>::given([requested(), E::SourceDebited {}]).when(C::Complete).then([E::TransferCompleted {}]);
}

#[test]
fn a_refused_debit_fails_without_refund() {
    Scenario::<Transfer>::given([requested()])
        .when(C::FailDebit { reason: "insufficient-funds".into() })
        .then([E::TransferFailed { reason: "insufficient-funds".into(), refunded: false }]);
}

#[test]
fn a_refused_credit_refunds_then_fails() {
    Scenario::<Transfer>::given([requested(), E::SourceDebited {}])
        .when(C::RefuseCredit { reason: "closed".into() })
        .then([E::TargetCreditRefused { reason: "closed".into() }]);
    Scenario::<Transfer>::given([requested(), E::SourceDebited {}, E::TargetCreditRefused { reason: "closed".into() }])
        .when(C::MarkRefunded)
        .then([E::TransferFailed { reason: "closed".into(), refunded: true }]);
}

#[test]
fn steps_out_of_order_are_refused() {
    Scenario::<Transfer>::given([requested()])
        .when(C::Complete)
        .then_err(TransferError::WrongStatus { status: TransferStatus::Requested, command: "complete" });
    Scenario::<Transfer>::given([requested(), E::SourceDebited {}, E::TransferCompleted {}])
        .when(C::MarkDebited)
        .then_err_matches(|e| e.rule() == "wrong-status");
}
