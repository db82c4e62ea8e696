import type { HTMLAttributes, ReactNode } from 'react';

// The list pages (builds, repositories, tags, triggers, deliveries) share one shape: a skeleton while
// the first page loads, an empty state that says how to get a first row, else a table in a card.

/** One column: its header, and what each row shows in it. */
export interface Column<T> {
  /** A stable name for React's key. */
  id: string;
  header: ReactNode;
  /** Classes on the header cell (e.g. `num`, `hide-narrow`). */
  headerClassName?: string;
  /** Classes on each body cell; defaults to headerClassName. */
  cellClassName?: string;
  cell: (row: T) => ReactNode;
}

export function DataTable<T>({
  className,
  columns,
  rows,
  rowKey,
  rowAttrs,
}: {
  /** Extra classes on the table (tests and styles find tables by them). */
  className?: string;
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string;
  /** Attributes on each row, e.g. `data-build-id`, by which tests and permalinks find it. */
  rowAttrs?: (row: T) => HTMLAttributes<HTMLTableRowElement> & Record<`data-${string}`, string>;
}) {
  return (
    <div className="card table-card">
      <table className={className ? `table ${className}` : 'table'}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.id} scope="col" className={c.headerClassName}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => (
            <tr key={rowKey(row)} {...rowAttrs?.(row)}>
              {columns.map((c) => (
                <td key={c.id} className={c.cellClassName ?? c.headerClassName}>
                  {c.cell(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/**
 * What a list shows before its table: `loading` while the first answer is pending, else `empty`
 * (an EmptyState, or null when there are rows or an error explains the blank), else the children.
 */
export function ListStates({ pending, loading, empty, children }: { pending: boolean; loading: string; empty: ReactNode | null; children: ReactNode }) {
  if (pending) {
    return (
      <div className="card skeleton" aria-busy="true">
        {loading}
      </div>
    );
  }
  if (empty) return <div className="card">{empty}</div>;
  return <>{children}</>;
}
