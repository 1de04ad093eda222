//! The product's rules, given/when/then.

use eslab_testing::Scenario;
use inventory::{Product, ProductCommand as C, ProductEvent as E, StockError};

fn lamp(stock: u32, reserved: u32) -> Vec<E> {
    vec![
        E::Registered { name: "Desk lamp".into() },
        E::Received { quantity: stock },
        E::Reserved { quantity: reserved },
    ]
}

#[test]
fn reservations_stay_within_what_is_available() {
    Scenario::<Product>::given(lamp(10, 3)).when(C::Reserve { quantity: 7 }).then([E::Reserved { quantity: 7 }]);
    Scenario::<Product>::given(lamp(10, 3))
        .when(C::Reserve { quantity: 8 })
        .then_err(StockError::Insufficient { available: 7 });
    Scenario::<Product>::given(lamp(10, 3))
        .when(C::Release { quantity: 4 })
        .then_err(StockError::NotReserved { reserved: 3 });
    Scenario::<Product>::given(lamp(10, 3)).when(C::Release { quantity: 3 }).then([E::Released { quantity: 3 }]);
}

#[test]
fn quantities_are_positive_and_bounded() {
    for zero in [C::Receive { quantity: 0 }, C::Reserve { quantity: 0 }, C::Release { quantity: 0 }] {
        Scenario::<Product>::given(lamp(10, 3)).when(zero).then_err(StockError::ZeroQuantity);
    }
    Scenario::<Product>::given(lamp(u32::MAX, 0)).when(C::Receive { quantity: 1 }).then_err(StockError::Overflow);
}

#[test]
fn a_product_is_registered_once_before_anything_else() {
    Scenario::<Product>::given([]).when(C::Receive { quantity: 1 }).then_err(StockError::NotRegistered);
    Scenario::<Product>::given(lamp(1, 0))
        .when(C::Register { name: "Lamp".into() })
        .then_err(StockError::AlreadyRegistered);
}
