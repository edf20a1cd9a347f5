;;; emacs_eglot.el --- Debian's Emacs 28 + eglot 1.9 drives labls in batch mode  -*- lexical-binding: t -*-

;; As README.md's Emacs snippet sets it up: labls is the python-mode server.  Runs a failing
;; script, reads its diagnostic through flymake, asks for the code actions there, then edits a
;; buffer that has an unsaved change (labls.edit.apply through workspace/applyEdit).  What it
;; saw goes to $LABLS_OUT as JSON; test_emacs.py judges it.

(require 'eglot)
(require 'json)
(require 'flymake)

(defvar labls-ws (file-name-as-directory (getenv "LABLS_WS")))
(defvar labls-seen nil "Alist written to $LABLS_OUT.")

(defvar labls-server nil)

(defun labls-note (key value) (push (cons key value) labls-seen))

(defun labls-write ()
  (with-temp-file (getenv "LABLS_OUT") (insert (json-encode labls-seen))))

(defun labls-wait (predicate seconds)
  "Spin the event loop until PREDICATE holds or SECONDS pass; its last value."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    value))

(setq eglot-server-programs
      `((python-mode . (,(getenv "LABLS_PYTHON") "-m" "labls.server.cli" "serve"))))
(setq eglot-sync-connect 30 eglot-connect-timeout 60)
;; eglot asks before it applies a server's edit (y-or-n-p); batch mode has no one to answer
(setq eglot-confirm-server-initiated-edits nil)

(condition-case err
    (progn
      (find-file (concat labls-ws "bad.py"))
      (python-mode)
      (apply #'eglot (eglot--guess-contact))
      (let ((server (setq labls-server (labls-wait #'eglot-current-server 60))))
        (labls-note 'connected (and server t))
        (flymake-mode 1)
        ;; run the failing script, waiting for its record
        (let ((record (jsonrpc-request
                       server :workspace/executeCommand
                       `(:command "labls.run.start" :arguments [(:script "bad.py" :wait t)])
                       :timeout 120)))
          (labls-note 'state (plist-get record :state)))
        ;; its diagnostic, as flymake shows it
        (let ((diags (labls-wait (lambda () (flymake-start) (flymake-diagnostics)) 30)))
          (labls-note 'diagnostics
                      (mapcar (lambda (d)
                                (list (cons 'line (line-number-at-pos (flymake-diagnostic-beg d)))
                                      (cons 'text (flymake-diagnostic-text d))))
                              diags))
          (let* ((failed (seq-find (lambda (d)
                                     (string-match-p "exception" (flymake-diagnostic-text d)))
                                   diags))
                 (actions (and failed (eglot-code-actions (flymake-diagnostic-beg failed)
                                                          (flymake-diagnostic-end failed)))))
            (labls-note 'actions (mapcar (lambda (a) (plist-get a :title)) actions))))
        ;; progress lines: eglot has no work-done progress; labls sends window/logMessage
        (with-current-buffer (jsonrpc-events-buffer server)
          (labls-note 'log-lines
                      (let ((n 0))
                        (save-excursion
                          (goto-char (point-min))
                          (while (search-forward "labls run" nil t) (setq n (1+ n))))
                        n)))
        ;; a buffer with an unsaved change, then an edit of another line of it
        (find-file (concat labls-ws "buffered.py"))
        (goto-char (point-min))
        (insert "# mine\n")
        (eglot--signal-textDocument/didChange)
        (let ((answer (jsonrpc-request
                       server :workspace/executeCommand
                       `(:command "labls.edit.apply"
                         :arguments [(:format "searchReplace"
                                      :text ,(concat "buffered.py\n<<<<<<< SEARCH\nB = 2\n"
                                                     "=======\nB = 20\n>>>>>>> REPLACE\n"))])
                       :timeout 60)))
          (labls-note 'edit-ok (eq (plist-get answer :ok) t))
          (labls-note 'edit-via (plist-get answer :via)))
        (labls-note 'buffer (buffer-substring-no-properties (point-min) (point-max)))
        ;; eglot's default: ask before applying; batch mode cannot answer, so eglot answers
        ;; the server an error, which labls must turn into a refused edit (and serve on)
        (setq eglot-confirm-server-initiated-edits 'confirm)
        (let ((answer (jsonrpc-request
                       server :workspace/executeCommand
                       `(:command "labls.edit.apply"
                         :arguments [(:format "searchReplace"
                                      :text ,(concat "buffered.py\n<<<<<<< SEARCH\nA = 1\n"
                                                     "=======\nA = 10\n>>>>>>> REPLACE\n"))])
                       :timeout 60)))
          (labls-note 'unasked-ok (plist-get answer :ok))
          (labls-note 'unasked-reason (plist-get answer :reason)))
        (labls-note 'buffer-after (buffer-substring-no-properties (point-min) (point-max)))
        (labls-note 'modified (and (buffer-modified-p) t))
        (eglot-shutdown server)))
  (error (labls-note 'error (format "%S" err))
         (when-let ((stderr (and labls-server
                                 (get-buffer (format "*%s stderr*" (jsonrpc-name labls-server))))))
           (labls-note 'stderr (with-current-buffer stderr (buffer-string))))))
(labls-write)
(kill-emacs 0)
