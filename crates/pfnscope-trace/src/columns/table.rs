//! The macro that turns the column table ([`super`]) into the record, the writer's builders and
//! the row reader, so that a column is declared once.

/// The Rust type of a column kind's values.
macro_rules! value_of {
    (Id) => { u64 };
    (U64) => { u64 };
    (U32) => { u32 };
    (OptU64) => { Option<u64> };
    (OptU32) => { Option<u32> };
    (OptI64) => { Option<i64> };
    (OptBool) => { Option<bool> };
    (Str) => { Sym };
    (OptStr) => { Option<Sym> };
}

macro_rules! columns {
    ($($(#[$doc:meta])* $field:ident: $kind:ident,)*) => {
        /// A probed call or tracepoint hit, decoded. No field holds a kernel pointer: vmas,
        /// files and mms are per-trace ids, `vm_ops` is a symbol name. `Copy`, as every field
        /// is: reading a row over a stale record drops nothing.
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct Record {
            /// Position in the file (not a column since schema 3: the row number).
            pub seq: u64,
            $($(#[$doc])* pub $field: value_of!($kind),)*
        }

        /// The schema's fields, in order.
        pub fn fields() -> Vec<Field> {
            vec![$(Field::new(stringify!($field), <$kind as Column>::data_type(), <$kind as Column>::NULLABLE)),*]
        }

        /// Every column's name, in schema order.
        pub const COLUMNS: &[&str] = &[$(stringify!($field)),*];

        /// The writer's columns under construction.
        #[derive(Default)]
        pub struct Builders {
            rows: usize,
            $($field: <$kind as Column>::Builder,)*
        }

        impl Builders {
            pub fn push(&mut self, r: &Record) {
                self.rows += 1;
                $(<$kind as Column>::append(&mut self.$field, &r.$field);)*
            }

            pub fn len(&self) -> usize {
                self.rows
            }

            pub fn finish(&mut self, schema: SchemaRef) -> Result<RecordBatch, ArrowError> {
                self.rows = 0;
                RecordBatch::try_new(schema, vec![$(<$kind as Column>::finish(&mut self.$field)),*])
            }
        }

        /// A checked batch read a row at a time: a consumer reads the few fields of each row it
        /// needs (the replay), where writing every field of every row into a ~0.5 KB [`Record`]
        /// was a third of `replay check`'s time. The batch's buffers are shared, not copied;
        /// names are interned once per dictionary entry. Older schemas' forms are read into the
        /// current one here ([`compat`]).
        pub struct Rows {
            len: usize,
            first_seq: u64,
            /// Empty since schema 3.
            seq: ScalarBuffer<u64>,
            $($field: <$kind as Column>::Owned,)*
            /// Columns the reader left undecoded ([`crate::TraceReader::open_without`]): they
            /// read as absent, and a debug build refuses to read them, so that a consumer that
            /// starts to need one finds out in its tests.
            pub(crate) unread: &'static [&'static str],
        }

        impl Rows {
            /// `batch`, checked, its rows numbered from `first_seq` (see [`compat::SEQ`]).
            /// Columns are found by name so a reader keeps working when a later writer of the
            /// same schema version appends columns; a missing column reads as default.
            pub fn new(batch: &RecordBatch, first_seq: u64) -> Result<Rows, String> {
                let mut names = Interner::default();
                $(let $field = owned_column::<$kind>(batch, stringify!($field), &mut names)?;)*
                Ok(Rows {
                    len: batch.num_rows(),
                    first_seq,
                    seq: compat::seq_column(batch)?,
                    $($field,)*
                    unread: &[],
                })
            }

            /// Marks the columns named in `unread` unread ([`Rows::unread`]), dropping them
            /// where the reader decoded them anyway (a trace without checksums): they were
            /// checked, and read as absent, as columns projected away do.
            pub(crate) fn leave_unread(&mut self, unread: &'static [&'static str]) {
                $(
                    if unread.contains(&stringify!($field)) {
                        self.$field = Default::default();
                    }
                )*
                self.unread = unread;
            }

            pub fn len(&self) -> usize {
                self.len
            }

            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// Row `i`'s position in the file.
            #[inline]
            pub fn seq(&self, i: usize) -> u64 {
                match self.seq.get(i) {
                    Some(&s) => s,
                    None => self.first_seq + i as u64,
                }
            }

            $(
                #[doc = concat!("Row `i`'s `", stringify!($field), "`: default in a column the batch lacks, and past the last row.")]
                #[inline]
                pub fn $field(&self, i: usize) -> value_of!($kind) {
                    debug_assert!(
                        !self.unread.contains(&stringify!($field)),
                        concat!("column `", stringify!($field), "` was left unread: take it off the reader's skip list"),
                    );
                    <$kind as Column>::at(&self.$field, i)
                }
            )*

            /// Row `i` as a record (unread columns as absent).
            pub fn record(&self, i: usize) -> Record {
                Record {
                    seq: self.seq(i),
                    $($field: <$kind as Column>::at(&self.$field, i),)*
                }
            }
        }

        impl std::fmt::Debug for Rows {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Rows")
                    .field("len", &self.len)
                    .field("first_seq", &self.first_seq)
                    .finish_non_exhaustive()
            }
        }

        /// One call: a row of a [`Rows`] or a record. The replay's model reads calls through
        /// this, so that a trace file's rows are read in place and a record built by hand (a
        /// test, a mutant) goes through the same rules.
        #[derive(Clone, Copy, Debug)]
        pub enum Rec<'a> {
            Row(&'a Rows, usize),
            Record(&'a Record),
        }

        impl<'a> Rec<'a> {
            #[inline]
            pub fn seq(self) -> u64 {
                match self {
                    Rec::Row(r, i) => r.seq(i),
                    Rec::Record(r) => r.seq,
                }
            }

            $(
                #[inline]
                pub fn $field(self) -> value_of!($kind) {
                    match self {
                        Rec::Row(r, i) => r.$field(i),
                        Rec::Record(r) => r.$field,
                    }
                }
            )*

            pub fn to_record(self) -> Record {
                match self {
                    Rec::Row(r, i) => r.record(i),
                    Rec::Record(r) => *r,
                }
            }
        }
    };
}
