package gateway

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/webhookgw/gateway/store"
)

// Dialect 2 (seed 003): /api/WebhookRegistrations. A registration receives every event type,
// with HTTP Basic auth from its user name and password. DELETE deactivates; PUT updates, and
// "isActive": true reactivates.

// registrationRequest is the body of POST and PUT /api/WebhookRegistrations. Pointers tell a
// missing field from an empty one.
type registrationRequest struct {
	RequestID        *string `json:"requestId"`
	CallBackURL      *string `json:"callBackUrl"`
	CallBackUserName *string `json:"callBackUserName"`
	CallBackPassword *string `json:"callBackPassword"`
	SourceSenderID   *string `json:"sourceSenderId"`
	IsActive         *bool   `json:"isActive"`
	// DeliveryPolicy is the gateway's extension: on PUT, keys left out keep their value and
	// null ones go back to the default; null as a whole resets every key.
	DeliveryPolicy json.RawMessage `json:"deliveryPolicy"`
}

// registrationView is a subscription as dialect 2 shows it, with every field of the seed, then
// the gateway's deliveryPolicy. Times are UTC in the seed's yyyy-mm-ddThh:mm:ss.mmmZ form,
// null when unset.
type registrationView struct {
	RegistrationID       string  `json:"registrationId"`
	RequestID            *string `json:"requestId"`
	CallBackURL          string  `json:"callBackUrl"`
	CallBackUserName     *string `json:"callBackUserName"`
	CallBackPassword     *string `json:"callBackPassword"`
	SubMerchantID        *string `json:"subMerchantId"`
	MerchantID           *string `json:"merchantId"`
	IsActive             bool    `json:"isActive"`
	DeactivatedAt        *string `json:"deactivatedAt"`
	IsInErrorState       bool    `json:"isInErrorState"`
	ErrorStateReason     *string `json:"errorStateReason"`
	DetectedErrorStateAt *string `json:"detectedErrorStateAt"`

	DeliveryPolicy policyView `json:"deliveryPolicy"`
}

// seedTime is the seed's date-time form, always UTC: 2020-12-16T09:31:35.622Z.
const seedTime = "2006-01-02T15:04:05.000Z"

// maskedSecret stands in for a password in responses unless admin.reveal_secrets is set.
const maskedSecret = "********"

func (g *Gateway) registrationView(s *store.Subscription) registrationView {
	password := optionalString(s.Password)
	if password != nil && !g.cfg.Admin.RevealSecrets {
		password = optionalString(maskedSecret)
	}
	sender := optionalString(s.SourceSenderID)
	return registrationView{
		RegistrationID:       s.ID,
		RequestID:            optionalString(s.RequestID),
		CallBackURL:          s.URL,
		CallBackUserName:     optionalString(s.Username),
		CallBackPassword:     password,
		SubMerchantID:        sender,
		MerchantID:           sender,
		IsActive:             s.Active,
		DeactivatedAt:        formatOptional(s.DeactivatedAt, seedTime),
		IsInErrorState:       s.InErrorState,
		ErrorStateReason:     optionalString(s.ErrorStateReason),
		DetectedErrorStateAt: formatOptional(s.DetectedErrorStateAt, seedTime),
		DeliveryPolicy:       newPolicyView(s.Policy),
	}
}

// registrationField is one string field of a registration request.
type registrationField struct {
	name  string
	value *string
	max   int
	into  *string
}

// applyRegistration checks req and copies the fields it has into sub. With required, every
// one of the five fields must be present (POST); otherwise missing ones are left as they are.
// deliveryPolicy is never required; the keys it has change sub's policy.
func (g *Gateway) applyRegistration(req *registrationRequest, sub *store.Subscription, required bool) error {
	fields := []registrationField{
		{"requestId", req.RequestID, 256, &sub.RequestID},
		{"callBackUrl", req.CallBackURL, 2048, &sub.URL},
		{"callBackUserName", req.CallBackUserName, 256, &sub.Username},
		{"callBackPassword", req.CallBackPassword, 1024, &sub.Password},
		{"sourceSenderId", req.SourceSenderID, 256, &sub.SourceSenderID},
	}
	var errs []FieldError
	for _, f := range fields {
		switch {
		case f.value == nil && required:
			errs = append(errs, FieldError{Field: f.name, Message: "is required"})
		case f.value == nil:
		case strings.TrimSpace(*f.value) == "":
			errs = append(errs, FieldError{Field: f.name, Message: "must not be empty"})
		case len(*f.value) > f.max:
			errs = append(errs, FieldError{Field: f.name, Message: "is too long"})
		case f.name == "callBackUrl":
			errs = append(errs, g.checkURL(f.name, *f.value)...)
		case f.name == "callBackUserName" && strings.Contains(*f.value, ":"):
			errs = append(errs, FieldError{Field: f.name, Message: "must not contain ':' (it is sent with HTTP Basic auth)"})
		}
	}
	pp, perrs := g.parsePolicy(req.DeliveryPolicy)
	policy := sub.Policy
	if len(perrs) == 0 {
		pp.apply(&policy)
		perrs = checkPolicy(policy)
	}
	errs = append(errs, perrs...)
	if len(errs) > 0 {
		return invalid(errs...)
	}
	sub.Policy = policy
	for _, f := range fields {
		if f.value != nil {
			*f.into = *f.value
		}
	}
	return nil
}

func (g *Gateway) createRegistration(c *fiber.Ctx) error {
	var req registrationRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	now := g.now().UTC()
	sub := &store.Subscription{
		ID:        g.newID(),
		Kind:      store.KindRegistration,
		Source:    store.SourceAPI,
		Events:    []string{store.AllEvents},
		Active:    true,
		CreatedAt: now,
		UpdatedAt: now,
	}
	if err := g.applyRegistration(&req, sub, true); err != nil {
		return err
	}
	if req.IsActive != nil && !*req.IsActive {
		sub.Active, sub.DeactivatedAt = false, &now
	}
	if err := g.store.CreateSubscription(c.UserContext(), sub); err != nil {
		return err
	}
	c.Location(strings.TrimSuffix(c.Path(), "/") + "/" + sub.ID)
	return c.Status(fiber.StatusCreated).JSON(g.registrationView(sub))
}

func (g *Gateway) listRegistrations(c *fiber.Ctx) error {
	subs, err := g.listPage(c)
	if err != nil {
		return err
	}
	views := make([]registrationView, len(subs))
	for i, s := range subs {
		views[i] = g.registrationView(s)
	}
	return c.JSON(views)
}

func (g *Gateway) getRegistration(c *fiber.Ctx) error {
	sub, err := g.subscription(c)
	if err != nil {
		return err
	}
	return c.JSON(g.registrationView(sub))
}

// updateRegistration changes the fields the body has; "isActive" true reactivates (and clears
// the error state), false deactivates.
func (g *Gateway) updateRegistration(c *fiber.Ctx) error {
	if err := g.refuseFileOwned(c); err != nil {
		return err
	}
	var req registrationRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	sub, err := g.updateOwned(c, func(sub *store.Subscription) error {
		if err := g.applyRegistration(&req, sub, false); err != nil {
			return err
		}
		if req.IsActive != nil {
			if *req.IsActive {
				store.Reactivate(sub)
			} else {
				deactivate(sub, g.now().UTC())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return c.JSON(g.registrationView(sub))
}

// deactivateRegistration is DELETE: the registration stops receiving events but is kept, with
// its history, until reactivated.
func (g *Gateway) deactivateRegistration(c *fiber.Ctx) error {
	sub, err := g.updateOwned(c, func(sub *store.Subscription) error {
		deactivate(sub, g.now().UTC())
		return nil
	})
	if err != nil {
		return err
	}
	return c.JSON(g.registrationView(sub))
}

// deactivate marks sub inactive from now, keeping the first deactivation time.
func deactivate(sub *store.Subscription, now time.Time) {
	if sub.Active || sub.DeactivatedAt == nil {
		sub.Active, sub.DeactivatedAt = false, &now
	}
}
