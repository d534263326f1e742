//! Shared by the storage suites: `on_both!` runs a test on each backend.

/// For each `async fn name(db: TestDatabase)`, a test `postgres::name` and
/// a test `sqlite::name`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(larder_storage::testing::TestDatabase::postgres().await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(larder_storage::testing::TestDatabase::sqlite().await).await
                }
            )*
        }
    };
}
