import { useEffect, useRef } from 'react';

/**
 * Focus for a screen's heading (give it tabIndex={-1}) once `ready`: after a screen
 * changes, keyboard and screen-reader users start from its top, not from the document's.
 */
export function useFocusOnArrival<T extends HTMLElement>(ready = true) {
  const ref = useRef<T>(null);
  useEffect(() => {
    if (ready) ref.current?.focus();
  }, [ready]);
  return ref;
}
