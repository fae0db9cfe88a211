import { type RefObject, useRef, useState } from 'react';

/**
 * Something the page needs could not be loaded: why, as an alert, and Retry, busy until the
 * answer. `retry` resolves true once it loaded, when this goes away: if its Retry had the focus,
 * the focus moves to `focusAfter`, a control that stays, instead of falling to the page.
 */
export function LoadFailed({
  message,
  retry,
  label,
  focusAfter,
}: {
  message: string;
  retry: () => Promise<boolean>;
  /** The button's accessible name when "Retry" alone would be ambiguous (it starts with "Retry"). */
  label?: string;
  focusAfter?: RefObject<HTMLElement | null>;
}) {
  const [retrying, setRetrying] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const onRetry = async () => {
    if (retrying) return;
    const hadFocus = document.activeElement === button.current;
    setRetrying(true);
    const loaded = await retry();
    if (loaded && hadFocus) focusAfter?.current?.focus();
    setRetrying(false);
  };
  return (
    <div className="row">
      <p role="alert" className="error grow">
        {message}
      </p>
      <button ref={button} type="button" className="secondary" aria-label={label} aria-disabled={retrying} onClick={() => void onRetry()}>
        Retry
      </button>
    </div>
  );
}
